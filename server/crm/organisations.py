"""Organisations: business data (not personal), so they need no gateway."""

from __future__ import annotations

import datetime as dt
import uuid

from server.crm.tables import Organisation


async def create(name: str) -> uuid.UUID:
    org_id = uuid.uuid4()
    await Organisation.insert(Organisation(id=org_id, name=name.strip(), created_at=dt.datetime.now(dt.UTC)))
    return org_id
