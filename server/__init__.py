"""Mutual's shared core: services, the gateway, the vault, policy and audit."""

import os

# Piccolo finds its engine through this module; every entry point imports `server` first.
os.environ.setdefault("PICCOLO_CONF", "server.piccolo_conf")
