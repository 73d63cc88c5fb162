"""The staff backoffice (htmx)."""
