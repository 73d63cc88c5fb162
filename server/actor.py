"""Who is acting: staff with roles, a customer acting on their own record, or the system."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Actor:
    kind: str
    """staff, customer, system or anonymous."""
    id: str
    """Account id (never a name or an address)."""
    face: str
    """portal, backoffice or cli."""
    roles: frozenset[str] = frozenset()
    person_id: uuid.UUID | None = None
    """For a customer: the person they are."""
    display: str = ""
    """Staff handle, shown in the backoffice."""
    team: str | None = None
    """Staff: the team whose people they serve (record scope "team")."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    signed_in_at: dt.datetime | None = None
    """When this session's sign-in happened (changes to how one signs in need a recent one)."""

    @property
    def role(self) -> str:
        return ",".join(sorted(self.roles)) or self.kind

    def is_self(self, person_id: uuid.UUID) -> bool:
        return self.kind == "customer" and self.person_id == person_id


def system_actor(purpose_hint: str = "system") -> Actor:
    return Actor(kind="system", id=purpose_hint, face="cli", roles=frozenset({"admin"}), display="system")
