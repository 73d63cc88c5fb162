"""Records returned by the gateway: values with their decisions, and a repr that leaks nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True, repr=False)
class Record:
    id: uuid.UUID
    values: dict[str, str | None]
    """Decrypted (or masked) values of the fields the actor may see."""
    effects: dict[str, str] = field(default_factory=dict)
    """Field -> allow, mask or deny."""
    created_at: dt.datetime | None = None
    extra: dict[str, object] = field(default_factory=dict)
    """Non-personal attributes (organisation, author, timestamps)."""

    def __getitem__(self, name: str) -> str | None:
        return self.values.get(name)

    def is_masked(self, name: str) -> bool:
        return self.effects.get(name) == "mask"

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}=<{self.effects.get(k, '?')}>" for k in self.values)
        return f"Record(id={self.id}, {shown})"

    __str__ = __repr__


@dataclass(frozen=True)
class Page:
    items: list[Record]
    next_cursor: str | None
