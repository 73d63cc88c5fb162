"""Audit: append-only events in a hash chain, verification, and readers."""
