"""Fixtures shared by the integration tests."""

from tests.integration._session_cache import local_only, lookups, polled  # noqa: F401 - fixtures, found by name
