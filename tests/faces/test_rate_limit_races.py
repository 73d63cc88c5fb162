"""Rate limits under attack: parallel guesses are counted before they are checked, so a burst gets no
more checks than the free attempts; and a burst from many addresses locks a named account for at most
`limits.WIDE_CAP`, not a day."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from server.errors import SignInFailed, TooManyAttempts
from server.identity import limits, service, totp
from server.settings import get_settings
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    STAFF_PASSWORD,
    csrf_token,
    face_client,
    make_customer,
    make_staff,
    post_form,
    sign_in_attempt,
)
from tests.support import ERIKA

BURST = 40


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Wrap module.name so that each call is counted (the real function still runs)."""
    calls: list[int] = []
    real = getattr(module, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


async def _burst(attempt: Any) -> list[BaseException | Any]:
    return await asyncio.gather(*(attempt() for _ in range(BURST)), return_exceptions=True)


async def test_forty_parallel_wrong_staff_passwords_get_only_the_free_attempts_verified(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_staff("alice", "admin")
    verified = _count_calls(monkeypatch, service, "verify_password")
    results = await _burst(lambda: service.staff_sign_in("alice", "wrong guess", "203.0.113.9", "r"))
    free = get_settings().signin_max_failures
    assert len(verified) == free, f"{len(verified)} passwords were checked, {free} are free"
    assert sum(isinstance(r, SignInFailed) for r in results) == free
    assert sum(isinstance(r, TooManyAttempts) for r in results) == BURST - free
    with pytest.raises(TooManyAttempts):  # and the right password from that address waits too
        await service.staff_sign_in("alice", STAFF_PASSWORD, "203.0.113.9", "r")


async def test_forty_parallel_wrong_customer_passwords_get_only_the_free_attempts_verified(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_customer(ERIKA)
    verified = _count_calls(monkeypatch, service, "verify_password")
    results = await _burst(lambda: service.customer_sign_in(ERIKA["email"], "wrong guess", "203.0.113.9", "r"))
    free = get_settings().signin_max_failures
    assert len(verified) == free
    assert sum(isinstance(r, TooManyAttempts) for r in results) == BURST - free


async def test_a_right_password_does_not_count_as_a_failure_of_its_address(db: None) -> None:
    await make_staff("alice", "admin")
    for _ in range(get_settings().signin_max_failures + 2):
        assert (await service.staff_sign_in("alice", STAFF_PASSWORD, "203.0.113.9", "r")).stage in ("mfa", "enrol")


async def test_forty_parallel_wrong_codes_get_only_the_free_attempts_checked(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """TOTP codes and recovery codes share the second step and its limit."""
    await make_staff("alice", "admin")
    checked = _count_calls(monkeypatch, totp, "check_code")
    async with face_client("backoffice") as client:
        csrf = await csrf_token(client)
        step = await sign_in_attempt(client, "alice", STAFF_PASSWORD, csrf)
        assert step.headers["location"] == "/signin/mfa"
        guesses = ["000000", "abcd-efgh-jkmn"]
        responses = await asyncio.gather(*(post_form(client, "/signin/mfa", {"code": guesses[n % 2]}, csrf)
                                           for n in range(BURST)))
    free = get_settings().signin_max_failures
    assert len(checked) == free, f"{len(checked)} codes were checked, {free} are free"
    assert sorted(r.status_code for r in responses) == [400] * free + [429] * (BURST - free)


async def test_a_stranger_guessing_from_many_addresses_locks_a_named_account_for_at_most_the_wide_cap(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stranger who knows a user name and has many addresses, guessing again whenever a lock ends,
    used to lock its owner out for a day; now the owner waits at most WIDE_CAP after the last guess."""
    await make_customer(ERIKA)
    clock = [dt.datetime.now(dt.UTC)]
    monkeypatch.setattr(limits, "_now", lambda: clock[0])
    free = get_settings().signin_max_failures
    address, guesses = 0, 0
    while guesses < free * limits.WIDE_FACTOR + 12:  # far past the doubling that reached a day
        try:
            await service.customer_sign_in(ERIKA["email"], "guess", f"203.0.113.{address // (free - 1)}", "r")
        except SignInFailed:
            guesses += 1
        except TooManyAttempts:
            clock[0] += dt.timedelta(minutes=1)  # the stranger waits for the lock to end, then goes on
            continue
        address += 1
    with pytest.raises(TooManyAttempts):
        await service.customer_sign_in(ERIKA["email"], CUSTOMER_PASSWORD, "198.51.100.1", "r")
    clock[0] += limits.WIDE_CAP + dt.timedelta(seconds=5)
    assert (await service.customer_sign_in(ERIKA["email"], CUSTOMER_PASSWORD, "198.51.100.1", "r")).stage == "full"


def test_the_lock_of_an_account_from_anywhere_never_exceeds_the_wide_cap() -> None:
    wide = limits.wide_key("customer", "someone")
    waits = [limits.lock_for(n, wide) for n in range(200)]
    assert max(waits) == limits.WIDE_CAP < limits.CAP
    assert waits == sorted(waits)
