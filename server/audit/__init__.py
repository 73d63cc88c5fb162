"""Audit: append-only events in a hash chain, verification, and readers."""

from server.audit.record import flush, record

__all__ = ["flush", "record"]
