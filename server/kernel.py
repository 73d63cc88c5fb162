"""The privacy kernel of one process: validated policies and the key provider, loaded once."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from server.policy import PolicySet, load_policies
from server.settings import get_settings
from server.vault import KeyProvider, load_key_provider


@dataclass(frozen=True)
class Kernel:
    policies: PolicySet
    keys: KeyProvider


@functools.cache
def get_kernel() -> Kernel:
    """Raises PolicyError or KeyError_ with a message naming the problem; start-up stops there."""
    settings = get_settings()
    return Kernel(policies=load_policies(settings.policies_dir), keys=load_key_provider(settings.key_file))
