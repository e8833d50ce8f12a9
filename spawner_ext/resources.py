"""One value for "an amount of CPU, memory and GPUs", so quota code adds and compares
amounts instead of looping over three attribute names.

CPU is kept on the millicore grid (Kubernetes' finest CPU unit): sums are rounded to
three decimals, so three 0.1-CPU reservations make exactly 0.3 and a request that fits
is never refused by float noise (0.1 + 0.2 > 0.3 in binary floating point).
"""

from __future__ import annotations

from dataclasses import dataclass

from .quantities import format_memory

#: Dimensions in the order refusals report them: the scarcest resource first.
DIMENSIONS = ("gpu", "cpu", "memory")
_UNITS = {"cpu": "CPUs", "memory": "memory", "gpu": "GPUs"}


def _millicores(cpu: float) -> float:
    return round(float(cpu), 3)


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu", _millicores(self.cpu))
        object.__setattr__(self, "memory", int(self.memory))
        object.__setattr__(self, "gpu", int(self.gpu))

    @classmethod
    def of(cls, amount) -> Resources:
        """From anything with ``cpu``/``memory``/``gpu`` (a spec, a Capacity, a table row)."""
        return cls(cpu=amount.cpu, memory=amount.memory, gpu=amount.gpu)

    def __add__(self, other: Resources) -> Resources:
        if not isinstance(other, Resources):
            return NotImplemented
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def left_after(self, used: Resources) -> Resources:
        """What is left of this limit once ``used`` is taken: never below zero (a limit lowered
        under what already runs leaves nothing, not a negative amount)."""
        return Resources(max(self.cpu - used.cpu, 0), max(self.memory - used.memory, 0), max(self.gpu - used.gpu, 0))

    def exceeding(self, limit: Resources) -> tuple[str, ...]:
        """The dimensions in which this amount is more than ``limit``, in DIMENSIONS order."""
        return tuple(dim for dim in DIMENSIONS if getattr(self, dim) > getattr(limit, dim))

    def fits_in(self, limit: Resources) -> bool:
        return not self.exceeding(limit)

    def amount(self, dim: str) -> str:
        """One dimension as people write it: ``1.5`` CPUs, ``4Gi`` memory, ``1`` GPU."""
        value = getattr(self, dim)
        if dim == "memory":
            return format_memory(value) if value else "0"
        return f"{value:g}"

    @staticmethod
    def unit(dim: str) -> str:
        return _UNITS[dim]

    def __str__(self) -> str:
        return f"{self.amount('cpu')} CPU, {self.amount('memory')} memory, {self.gpu} GPU"

