"""One parser for resource quantities (``4``, ``500m``, ``16Gi``), shared by the
catalogue, quota checks and both backends, so a value means the same everywhere."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


class QuantityError(ValueError):
    """A quantity string that Kubernetes would not accept either."""


def _parse(value: str | int | float) -> Decimal:
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, (int, float)):
        if value < 0:
            raise QuantityError(f"{value!r} is negative")
        return Decimal(str(value))
    text = str(value).strip()
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise QuantityError(
            f"{value!r} is not a quantity (examples: 2, 500m, 0.5, 16Gi, 512Mi)"
        )
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - regex guarantees a number
        raise QuantityError(f"{value!r} is not a number") from exc
    suffix = match["suffix"] or ""
    if suffix == "m":
        return number / 1000
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    return number * _DECIMAL[suffix]


def parse_cpu(value: str | int | float) -> float:
    """CPU cores as a float: ``"500m"`` -> 0.5, ``2`` -> 2.0."""
    parsed = _parse(value)
    if parsed <= 0:
        raise QuantityError(f"cpu {value!r} must be greater than zero")
    return float(parsed)


def parse_memory(value: str | int | float) -> int:
    """Memory in bytes: ``"4Gi"`` -> 4294967296. Plain numbers are bytes."""
    text = str(value).strip()
    if text.endswith("m") and not isinstance(value, (int, float)):
        raise QuantityError(f"memory {value!r}: milli-bytes make no sense; use Mi or Gi")
    parsed = _parse(value)
    if parsed <= 0:
        raise QuantityError(f"memory {value!r} must be greater than zero")
    if parsed != parsed.to_integral_value():
        raise QuantityError(f"memory {value!r} is not a whole number of bytes")
    return int(parsed)


def format_cpu(cores: float) -> str:
    """Kubernetes form of a CPU amount: whole cores plain, fractions in millicores."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(num_bytes: int) -> str:
    """Largest binary suffix that divides evenly, e.g. 4294967296 -> ``4Gi``."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if num_bytes % unit == 0:
            return f"{num_bytes // unit}{suffix}"
    return str(num_bytes)
