"""The one refusal type of the pure core: a field and the HTTP status the caller gets."""

from __future__ import annotations


class OptionsError(ValueError):
    """Bad input (400) or what the member's role forbids (403), naming the field."""

    def __init__(self, status: int, field: str, message: str):
        self.status = status
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
