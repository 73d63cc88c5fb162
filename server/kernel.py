"""The privacy kernel of one process: validated policies and the key provider, loaded once."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from server.policy import PolicyError, PolicySet, load_policies
from server.settings import get_settings
from server.vault import KeyError_, KeyProvider, load_key_provider


@dataclass(frozen=True)
class Kernel:
    policies: PolicySet
    keys: KeyProvider


@functools.cache
def get_kernel() -> Kernel:
    """Raises PolicyError or KeyError_ with a message naming the problem; start-up stops there."""
    settings = get_settings()
    return Kernel(policies=load_policies(settings.policies_dir), keys=load_key_provider(settings.key_file))


def require_kernel(doing: str = "start") -> Kernel:
    """For commands: the kernel, or exit with the message that names the problem and the fix."""
    try:
        return get_kernel()
    except (PolicyError, KeyError_) as exc:
        raise SystemExit(f"mutual: cannot {doing}: {exc}") from None


async def check_database_keys() -> None:
    """A key file that does not belong to this database stops start-up, with a message naming it."""
    from server.vault.store import check_keys_match

    await check_keys_match(get_kernel().keys)
