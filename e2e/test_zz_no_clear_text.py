"""Runs last (file name order): after every journey of the suite has written through the real apps,
neither the database files nor the servers' logs hold a demo name, address or phone number."""

from __future__ import annotations

import re
from pathlib import Path

from e2e.conftest import Stack
from e2e.test_journeys import ERIKA_EMAIL, NEW_PHONE

NEEDLES = [b"Mustermann", b"mustermann", ERIKA_EMAIL.encode(), b"max.mustermann@example.org",
           b"lena.beispiel@example.com", b"loeschbar", NEW_PHONE.encode(),
           b"paula.muster@example.net", b"Paula"]


def test_the_database_files_and_logs_hold_no_personal_data_in_clear_text(stack: Stack) -> None:
    files = [p for p in stack.var_dir.glob("mutual.sqlite3*") if p.is_file()]
    assert stack.database in files
    for path in files:
        data = Path(path).read_bytes()
        for needle in NEEDLES:
            assert needle not in data, f"{path.name} holds {needle!r} in clear text"
    logs = b"".join(p.read_bytes() for p in stack.var_dir.glob("*.log"))
    assert not re.search(rb"(?i)mustermann|example\.(org|net)|paula", logs), "a server log holds personal data"
