"""`mutual staff reset-mfa` and `mutual outbox`, run in-process against the test database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.identity import cli
from server.identity.service import create_staff
from server.identity.tables import StaffAccount
from server.mail import Mail, send
from server.settings import get_settings
from tests.faces._client import enrol_totp, events_since, last_seq, summary


def _run(*argv: str) -> int:
    from server.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return int(args.func(args))


async def test_reset_mfa_clears_the_authenticator_and_is_audited(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    from server.identity.service import resume_session
    from tests.faces._client import staff_session

    account_id = await create_staff("lost-phone", "staff-password-for-tests", ["support"])
    await enrol_totp("lost-phone", account_id)
    token = await staff_session("lost-phone")
    before = await last_seq()
    # The command runs its own event loop, as it does from the shell.
    code = await asyncio.to_thread(_run, "staff", "reset-mfa", "lost-phone")
    assert code == 0
    rows = await StaffAccount.select(StaffAccount.totp_secret).where(StaffAccount.id == account_id)
    assert rows[0]["totp_secret"] is None
    assert await resume_session("backoffice", token, "r") is None, "whoever has the lost device is signed out"
    assert summary(await events_since(before)) == [("mfa_reset", "session", "ok")]
    assert "set up a new authenticator" in capsys.readouterr().out


async def test_reset_mfa_of_an_unknown_account_says_so(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(_run, "staff", "reset-mfa", "nobody-here") == 1
    assert "there is no staff account 'nobody-here'" in capsys.readouterr().out


async def test_outbox_lists_the_last_mails_with_their_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MUTUAL_MAIL_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.delenv("MUTUAL_SMTP_HOST", raising=False)
    get_settings.cache_clear()
    try:
        await send(Mail("erika.mustermann@example.org", "Sign-in link", "Open https://portal.test/signin/email/open?t=abc"))
        assert cli.cmd_outbox(type("Args", (), {"last": 5})()) == 0
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "Sign-in link" in out and "https://portal.test/signin/email/open?t=abc" in out


async def test_an_administrator_ends_the_sessions_of_one_member_of_staff_or_of_everyone(
        db: None, capsys: pytest.CaptureFixture[str]) -> None:
    from server.identity.service import resume_session
    from tests.faces._client import make_staff, staff_session

    await make_staff("leaver", "support")
    await make_staff("stayer", "support")
    leaver, stayer = await staff_session("leaver"), await staff_session("stayer")
    before = await last_seq()
    assert await asyncio.to_thread(_run, "staff", "sign-out", "leaver") == 0
    assert await resume_session("backoffice", leaver, "r") is None
    assert await resume_session("backoffice", stayer, "r") is not None
    assert await asyncio.to_thread(_run, "sessions", "end-all") == 0
    assert await resume_session("backoffice", stayer, "r") is None
    assert summary(await events_since(before)) == [("session_end_admin", "session", "ok")] * 2
    assert "1 session(s) of leaver ended" in capsys.readouterr().out


async def test_staff_create_takes_a_password_from_stdin_and_refuses_a_weak_one(
        db: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from server.identity.service import staff_sign_in

    monkeypatch.setattr("sys.stdin", io.StringIO("mutual-newcomer\n"))
    assert await asyncio.to_thread(_run, "staff", "create", "newcomer", "--role", "support", "--password-stdin") == 1
    assert "password refused" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("a long and fine pass phrase\n"))
    before = await last_seq()
    assert await asyncio.to_thread(_run, "staff", "create", "newcomer", "--role", "support", "--team", "north",
                                   "--password-stdin") == 0
    assert summary(await events_since(before)) == [("staff_create", "session", "ok")]
    started = await staff_sign_in("newcomer", "a long and fine pass phrase", "cli-test", "r")
    assert started.stage == "enrol"  # the second factor comes at the first sign-in
    monkeypatch.setattr("sys.stdin", io.StringIO("a long and fine pass phrase\n"))
    assert await asyncio.to_thread(_run, "staff", "create", "x", "--role", "wizard", "--password-stdin") == 1
    assert "unknown role(s) wizard" in capsys.readouterr().out


async def test_a_switched_off_account_loses_its_sessions_and_cannot_sign_in(db: None) -> None:
    from server.errors import SignInFailed
    from server.identity.service import resume_session, staff_sign_in
    from tests.faces._client import make_staff, staff_session

    await make_staff("leaver", "support")
    token = await staff_session("leaver")
    assert await asyncio.to_thread(_run, "staff", "disable", "leaver") == 0
    assert await resume_session("backoffice", token, "r") is None
    with pytest.raises(SignInFailed):
        await staff_sign_in("leaver", "staff-password-for-tests", "cli-test", "r")
    assert await asyncio.to_thread(_run, "staff", "enable", "leaver") == 0
    assert (await staff_sign_in("leaver", "staff-password-for-tests", "cli-test", "r")).stage == "mfa"


async def test_an_administrator_ends_one_customer_s_sessions(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    from server.identity.service import resume_session
    from tests.faces._client import customer_session, make_customer
    from tests.support import ERIKA, MAX

    erika, max_ = await make_customer(ERIKA), await make_customer(MAX)
    hers, his = await customer_session(erika.email), await customer_session(max_.email)
    assert await asyncio.to_thread(_run, "sessions", "end-customer", ERIKA["email"]) == 0
    assert await resume_session("portal", hers, "r") is None
    assert await resume_session("portal", his, "r") is not None
    assert ERIKA["email"] not in repr(await events_since(0))
    assert await asyncio.to_thread(_run, "sessions", "end-customer", "nobody@example.org") == 1


async def _lock_out(sign_in: object, login: str, client: str) -> None:
    """Wrong passwords from `client` until the account is locked from there."""
    from server.errors import SignInFailed, TooManyAttempts

    for _ in range(get_settings().signin_max_failures):
        with pytest.raises(SignInFailed):
            await sign_in(login, "not-the-password", client, "r")  # type: ignore[operator]
    with pytest.raises(TooManyAttempts):
        await sign_in(login, "not-the-password", client, "r")  # type: ignore[operator]


async def test_an_administrator_lifts_the_locks_of_one_member_of_staff(db: None,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from server.errors import TooManyAttempts
    from server.identity import limits
    from server.identity.service import staff_sign_in
    from tests.faces._client import make_staff

    await make_staff("locked-out", "support")
    await make_staff("still-locked", "support")
    locked = (await StaffAccount.select(StaffAccount.id).where(StaffAccount.username == "locked-out"))[0]["id"]
    await _lock_out(staff_sign_in, "locked-out", "203.0.113.1")
    await _lock_out(staff_sign_in, "still-locked", "203.0.113.2")
    code_keys = limits.account_keys(limits.STAFF_MFA, str(locked), "203.0.113.1")
    for _ in range(get_settings().signin_max_failures):
        await limits.record("mfa", "backoffice", code_keys)
    with pytest.raises(TooManyAttempts):
        await limits.check("mfa", "backoffice", code_keys)
    before = await last_seq()
    assert await asyncio.to_thread(_run, "staff", "unlock", "Locked-Out") == 0
    assert "sign-in of Locked-Out unlocked (30 failed attempt(s) forgotten)" in capsys.readouterr().out
    # From the address that was locked, the right password works again, and codes are checked again.
    assert (await staff_sign_in("locked-out", "staff-password-for-tests", "203.0.113.1", "r")).stage == "mfa"
    await limits.check("mfa", "backoffice", code_keys)
    with pytest.raises(TooManyAttempts):  # another account's lock stays
        await staff_sign_in("still-locked", "staff-password-for-tests", "203.0.113.2", "r")
    events = await events_since(before)
    assert summary(events)[0] == ("signin_unlock", "session", "ok")
    assert events[0].fields == {"account": "locked-out", "count": "30"}
    assert await asyncio.to_thread(_run, "staff", "unlock", "nobody-here") == 1
    assert "there is no staff account 'nobody-here'" in capsys.readouterr().out


async def test_an_administrator_lifts_the_locks_of_one_customer(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    from server.identity.service import customer_sign_in
    from tests.faces._client import CUSTOMER_PASSWORD, make_customer
    from tests.support import ERIKA

    erika = await make_customer(ERIKA)
    await _lock_out(customer_sign_in, erika.email, "198.51.100.9")
    before = await last_seq()
    assert await asyncio.to_thread(_run, "sessions", "unlock-customer", ERIKA["email"]) == 0
    assert "sign-in of that customer unlocked (15 attempt(s) forgotten)" in capsys.readouterr().out
    assert (await customer_sign_in(erika.email, CUSTOMER_PASSWORD, "198.51.100.9", "r")).stage == "full"
    events = await events_since(before)
    assert summary(events)[0] == ("signin_unlock", "session", "ok")
    assert ERIKA["email"] not in repr(events) and "Mustermann" not in repr(events)
    assert await asyncio.to_thread(_run, "sessions", "unlock-customer", "nobody@example.org") == 1
    assert "no customer account signs in with that address" in capsys.readouterr().out


async def test_an_administrator_gives_a_forgetful_member_of_staff_a_new_password(
        db: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from server.errors import SignInFailed
    from server.identity.service import resume_session, staff_sign_in
    from tests.faces._client import STAFF_PASSWORD, make_staff, staff_session

    await make_staff("forgetful", "support")
    token = await staff_session("forgetful")
    await _lock_out(staff_sign_in, "forgetful", "203.0.113.5")
    monkeypatch.setattr("sys.stdin", io.StringIO("forgetful123\n"))  # built on the user name: refused
    assert await asyncio.to_thread(_run, "staff", "set-password", "forgetful", "--password-stdin") == 1
    assert "password refused" in capsys.readouterr().out
    assert await resume_session("backoffice", token, "r") is not None, "a refused password changes nothing"
    before = await last_seq()
    monkeypatch.setattr("sys.stdin", io.StringIO("a new and long pass phrase\n"))
    assert await asyncio.to_thread(_run, "staff", "set-password", "forgetful", "--password-stdin") == 0
    assert "they still need their authenticator app" in capsys.readouterr().out
    events = await events_since(before)
    assert summary(events) == [("password_set_admin", "session", "ok")] and events[0].fields == {"account": "forgetful"}
    assert await resume_session("backoffice", token, "r") is None, "the sessions ended"
    with pytest.raises(SignInFailed):
        await staff_sign_in("forgetful", STAFF_PASSWORD, "198.51.100.1", "r")
    # The lock from that address is lifted, and the new password leads to the code step, not further.
    assert (await staff_sign_in("forgetful", "a new and long pass phrase", "203.0.113.5", "r")).stage == "mfa"
    await make_staff("no-factor", "support", mfa=False)  # say, made for single sign-on
    monkeypatch.setattr("sys.stdin", io.StringIO("a new and long pass phrase\n"))
    assert await asyncio.to_thread(_run, "staff", "set-password", "no-factor", "--password-stdin") == 0
    assert "the account has NO authenticator app" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("a new and long pass phrase\n"))
    assert await asyncio.to_thread(_run, "staff", "set-password", "nobody-here", "--password-stdin") == 1
    assert "there is no staff account 'nobody-here'" in capsys.readouterr().out
