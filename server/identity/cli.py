"""`mutual staff reset-mfa|sign-out USERNAME`, `mutual sessions end-all` and `mutual outbox`: account help
for administrators and developers."""

from __future__ import annotations

import argparse
import asyncio

from server.cli_groups import Commands, register_group
from server.kernel import require_kernel
from server.settings import get_settings


async def _reset(username: str) -> bool:
    from server.actor import system_actor
    from server.identity import totp
    from server.identity.service import audit_security

    done = await totp.reset_totp(username)
    if done:
        await audit_security(system_actor("staff-admin"), "mfa_reset", "ok", fields={"account": username})
    return done


def cmd_reset_mfa(args: argparse.Namespace) -> int:
    """A member of staff lost the authenticator and the recovery codes: they enrol again at next sign-in."""
    require_kernel()
    if not asyncio.run(_reset(args.username)):
        print(f"mutual: there is no staff account {args.username!r}; check the user name")
        return 1
    print(f"mutual: two-step sign-in of {args.username} reset; they set up a new authenticator at next sign-in")
    return 0


async def _end_sessions(username: str | None) -> int | None:
    from server.actor import system_actor
    from server.identity import service
    from server.identity.tables import StaffAccount

    if username is None:
        count = await service.end_all_sessions()
        fields = {"scope": "everyone"}
    else:
        rows = await StaffAccount.select(StaffAccount.id).where(StaffAccount.username == username.casefold())
        if not rows:
            return None
        count = await service.end_all_sessions(rows[0]["id"])
        fields = {"account": username}
    await service.audit_security(system_actor("staff-admin"), "session_end_admin", "ok",
                                 fields={**fields, "count": str(count)})
    return count


def cmd_sign_out(args: argparse.Namespace) -> int:
    """End every session of one member of staff (a lost laptop, someone leaving)."""
    require_kernel()
    count = asyncio.run(_end_sessions(args.username))
    if count is None:
        print(f"mutual: there is no staff account {args.username!r}; check the user name")
        return 1
    print(f"mutual: {count} session(s) of {args.username} ended")
    return 0


def cmd_end_all(args: argparse.Namespace) -> int:
    """End every session of everyone, staff and customers (after a suspected breach)."""
    require_kernel()
    count = asyncio.run(_end_sessions(None))
    print(f"mutual: {count} session(s) ended; everyone signs in again")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """The development outbox: the last mails, with their links (when no SMTP server is set)."""
    from server.mail import links_in, outbox_messages

    settings = get_settings()
    if settings.smtp_host:
        print(f"mutual: mail goes to the SMTP server {settings.smtp_host}:{settings.smtp_port}, not an outbox")
        return 1
    messages = outbox_messages(settings.mail_outbox)[-args.last:]
    if not messages:
        print(f"mutual: no mail in {settings.mail_outbox} yet")
    for message in messages:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        print(f"{message['Date']}  to {message['To']}\n  {message['Subject']}")
        for link in links_in(text):
            print(f"  {link}")
    return 0


def _staff_commands(commands: Commands) -> None:
    reset = commands.add_parser("reset-mfa", help="make a staff account set up two-step sign-in again "
                                "(lost authenticator and recovery codes)")
    reset.add_argument("username")
    reset.set_defaults(func=cmd_reset_mfa)
    sign_out = commands.add_parser("sign-out", help="end every session of one staff account")
    sign_out.add_argument("username")
    sign_out.set_defaults(func=cmd_sign_out)


def _session_commands(commands: Commands) -> None:
    commands.add_parser("end-all", help="end every session of everyone (staff and customers)").set_defaults(
        func=cmd_end_all)


def register(subparsers: Commands) -> None:
    register_group(subparsers, "staff", "staff account administration", _staff_commands)
    register_group(subparsers, "sessions", "session administration", _session_commands)
    outbox = subparsers.add_parser("outbox", help="show the last mails of the development outbox")
    outbox.add_argument("--last", type=int, default=5)
    outbox.set_defaults(func=cmd_outbox)
