"""Verification's view of events recorded but not yet sequenced (audit_pending): `verify_database` is wrapped
so it sequences them first and fails when one waited longer than MUTUAL_AUDIT_PENDING_MAX_SECONDS."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec

if TYPE_CHECKING:
    from server.audit.verify import VerifyResult

P = ParamSpec("P")


def pending_checked(
    verify: Callable[P, Coroutine[Any, Any, VerifyResult]],
) -> Callable[P, Coroutine[Any, Any, VerifyResult]]:
    """Decorate the live-chain verification (server.audit.sequencer.checked does the work)."""

    @functools.wraps(verify)
    async def verify_with_pending(*args: P.args, **kwargs: P.kwargs) -> VerifyResult:
        from server.audit.sequencer import checked  # it imports the verifier, which imports this module

        return await checked(verify, *args, **kwargs)

    return verify_with_pending
