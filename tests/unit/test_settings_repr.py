"""Secrets in settings never appear in their repr (a traceback, a log line, a debugger)."""

from __future__ import annotations

import pytest

from server.settings import get_settings


def test_repr_of_settings_shows_no_password_key_or_client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "MUTUAL_SMTP_PASSWORD": "smtp-pw-Erika-4711",
        "MUTUAL_OIDC_CLIENT_SECRET": "oidc-secret-0815",
        "MUTUAL_DATABASE_URL": "postgresql://mutual:db-pw-9876@db.example.org:5432/mutual",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.smtp_password == secrets["MUTUAL_SMTP_PASSWORD"]  # read, only not shown
        text = repr(settings)
        for value in (*secrets.values(), "db-pw-9876"):
            assert value not in text
        assert "smtp_port=" in text  # the rest is still there to debug with
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
