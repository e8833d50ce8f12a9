"""Request bodies and the error body of the DSW API, so the OpenAPI document describes them.

Bodies are pydantic models: FastAPI validates them and the refusal names the field (400).
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from ..catalog.models import Capacity, Cpu, Memory
from ..roles import Role
from ..snapshots import NAME_PATTERN, NAME_RULE, valid_name

# the bounds ops._bounded enforces ("larger than any machine")
MAX_CPU, MAX_MEMORY, MAX_GPU = 100_000, 2**60, 10_000


class ErrorBody(BaseModel):
    """Every refusal: the status says what kind, ``detail`` says which field and why."""

    detail: str = Field(examples=["cpu: -1 is negative"])


def _finite(value):
    # NaN/Infinity are accepted by Python's JSON parser but are no quantity
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


class CapacityBody(Capacity):
    """cpu, memory and gpu of an allocation or a member quota (``{"cpu": 8, "memory": "32Gi", "gpu": 1}``).
    The catalogue's Capacity, with its quantity syntax spelled out for the OpenAPI document."""

    cpu: Annotated[Cpu, BeforeValidator(_finite), WithJsonSchema({
        "description": f"cores, more than 0 and at most {MAX_CPU}: a number or a quantity (2, 0.5, 500m)",
        "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CPU},
                  {"type": "string", "pattern": r"^([1-9][0-9]{0,4}(\.[0-9]{1,3})?|0?\.[0-9]{0,2}[1-9]|[1-9][0-9]{0,7}m)$"}]})]
    memory: Annotated[Memory, BeforeValidator(_finite), WithJsonSchema({
        "description": "bytes, more than 0: a whole number or a quantity (16Gi, 512Mi)",
        "anyOf": [{"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_MEMORY},
                  {"type": "string", "pattern": "^[1-9][0-9]{0,5}(Ki|Mi|Gi|Ti|k|M|G|T)?$"}]})]
    gpu: int = Field(default=0, ge=0, le=MAX_GPU)


class MemberBody(BaseModel):
    """A member's workspace role."""

    model_config = ConfigDict(extra="forbid")
    role: Role


class SaveImageBody(BaseModel):
    """Which own instance to save, under which name."""

    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(default=None, description="only the caller's own instance: omit, or the caller's name")
    server: str = Field(description="the instance's server name ('' is the default server)")
    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN}, description=NAME_RULE)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not valid_name(value):
            raise ValueError(f"image name {value!r}: {NAME_RULE}")
        return value


class PolicyBody(BaseModel):
    """A workspace's idle shutdown bound: the longest idle time its members may choose, in
    minutes (fractions allowed), within the platform's bound; null clears it (the platform's
    bound applies again)."""

    model_config = ConfigDict(extra="forbid")
    idle_max_minutes: float | None = Field(description="minutes, more than 0 and at most the platform's bound; "
                                                       "null: the platform's bound")


class ScheduleBody(BaseModel):
    """When the instance stops: exactly one of ``stop_at`` (ISO 8601 time, UTC when it names
    no zone) or ``stop_in_hours``; in the future and at most a week ahead."""

    model_config = ConfigDict(extra="forbid")
    stop_at: str | None = Field(default=None, examples=["2026-12-01T18:00:00Z"])
    stop_in_hours: float | None = Field(default=None, examples=[2])


def errors(*statuses: int) -> dict:
    """``responses=`` for FastAPI: each status with the common error body."""
    text = {400: "bad input (names the field)", 401: "no valid token", 403: "the caller's role does not allow it",
            404: "unknown workspace, member, group, instance or image", 409: "conflicts with quotas or running instances",
            500: "the engine failed", 502: "the hub or the registry failed"}
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}
