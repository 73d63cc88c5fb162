"""`mutual staff create|disable|enable|reset-mfa|sign-out|set-password|unlock`, `mutual sessions
end-all|end-customer|unlock-customer|reindex-email` and `mutual outbox`: account help for administrators
and developers."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

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


def _read_password(args: argparse.Namespace, prompt: str = "Password for the new account: ") -> str | None:
    import getpass
    import sys

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(prompt)
    if getpass.getpass("The same again: ") != first:
        print("mutual: the two passwords differ; nothing was changed")
        return None
    return first


def cmd_set_password(args: argparse.Namespace) -> int:
    """A member of staff forgot the password: give them a new one (their second factor stays)."""
    from server.errors import Invalid
    from server.identity import service

    require_kernel()
    password = _read_password(args, f"New password for {args.username}: ")
    if password is None:
        return 1
    try:
        has_authenticator = asyncio.run(service.set_staff_password(args.username, password))
    except Invalid as exc:
        print(f"mutual: password refused: {exc.errors['password']}")
        return 1
    if has_authenticator is None:
        print(f"mutual: there is no staff account {args.username!r}; check the user name")
        return 1
    factor = ("they still need their authenticator app to sign in" if has_authenticator else
              "the account has NO authenticator app: whoever has this password sets one up at the next "
              "sign-in (or, with MUTUAL_STAFF_MFA=optional, is signed in)")
    print(f"mutual: new password of {args.username} set; their sessions have ended and {factor}. "
          "Tell them the password in person, and ask them to change it on My account.")
    return 0


async def _create(args: argparse.Namespace, password: str) -> str | None:
    from server.actor import system_actor
    from server.errors import Invalid
    from server.identity import service

    try:
        account_id = await service.create_staff(args.username, password, args.role, team=args.team)
    except Invalid as exc:
        return "; ".join(f"{field}: {problem}" for field, problem in exc.errors.items())
    await service.audit_security(system_actor("staff-admin"), "staff_create", "ok",
                                 fields={"account": args.username, "roles": ",".join(args.role),
                                         "id": str(account_id)})
    return None


def cmd_create(args: argparse.Namespace) -> int:
    """A staff account without demo data: the password is typed (or piped with --password-stdin);
    the second factor is set up at the first sign-in."""
    from server.identity.passwords import password_problem

    require_kernel()
    password = _read_password(args)
    if password is None:
        return 1
    if problem := password_problem(password, personal=(args.username,)):
        print(f"mutual: password refused: {problem}")
        return 1
    if problem := asyncio.run(_create(args, password)):
        print(f"mutual: account not created: {problem}")
        return 1
    print(f"mutual: staff account {args.username} created ({', '.join(args.role)}); "
          "they set up an authenticator app at their first sign-in")
    return 0


async def _set_active(username: str, active: bool) -> bool:
    from server.actor import system_actor
    from server.identity import service

    if await service.set_staff_active(username, active) is None:
        return False
    await service.audit_security(system_actor("staff-admin"), "staff_enable" if active else "staff_disable", "ok",
                                 fields={"account": username})
    return True


def _switch(active: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        require_kernel()
        if not asyncio.run(_set_active(args.username, active)):
            print(f"mutual: there is no staff account {args.username!r}; check the user name")
            return 1
        print(f"mutual: {args.username} " + ("can sign in again" if active else
                                             "is switched off; their sessions have ended"))
        return 0

    return run


async def _end_customer(email: str) -> int | None:
    from server.actor import system_actor
    from server.identity import service

    account_id = await service.customer_account_id(email)
    if account_id is None:
        return None
    count = await service.end_all_sessions(account_id)
    # The account id, never the address, goes into the audit event.
    await service.audit_security(system_actor("staff-admin"), "session_end_admin", "ok",
                                 fields={"customer_account": str(account_id), "count": str(count)})
    return count


def cmd_end_customer(args: argparse.Namespace) -> int:
    """End every portal session of one customer, found by the sign-in address."""
    require_kernel()
    count = asyncio.run(_end_customer(args.email))
    if count is None:
        print("mutual: no customer account signs in with that address; check it")
        return 1
    print(f"mutual: {count} session(s) of that customer ended")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Lift the sign-in locks of one member of staff (password and code attempts, from any address)."""
    from server.identity import service

    require_kernel()
    count = asyncio.run(service.unlock_staff(args.username))
    if count is None:
        print(f"mutual: there is no staff account {args.username!r}; check the user name")
        return 1
    print(f"mutual: sign-in of {args.username} unlocked ({count} failed attempt(s) forgotten)")
    return 0


def cmd_unlock_customer(args: argparse.Namespace) -> int:
    """Lift the sign-in locks of one customer (password, emailed links, resets), found by the sign-in address."""
    from server.identity import service

    require_kernel()
    count = asyncio.run(service.unlock_customer(args.email))
    if count is None:
        print("mutual: no customer account signs in with that address; check it")
        return 1
    print(f"mutual: sign-in of that customer unlocked ({count} attempt(s) forgotten)")
    return 0


def cmd_reindex_email(args: argparse.Namespace) -> int:
    """Rebuild the customers' sign-in index from their addresses on record (once, after upgrading)."""
    from server.bench.progress import Progress
    from server.identity.email_links import reindex_signin_addresses

    require_kernel()
    changed = asyncio.run(reindex_signin_addresses(Progress))
    print(f"mutual: sign-in index rebuilt ({changed} account(s) changed)")
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
    create = commands.add_parser("create", help="create a staff account (password typed, or --password-stdin)")
    create.add_argument("username")
    create.add_argument("--role", action="append", required=True, help="a role from policies/access.yml "
                        "(repeatable)")
    create.add_argument("--team", help="the team whose people the account serves")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(func=cmd_create)
    for name, active, text in (("disable", False, "switch a staff account off and end its sessions"),
                               ("enable", True, "let a switched-off staff account sign in again")):
        switch = commands.add_parser(name, help=text)
        switch.add_argument("username")
        switch.set_defaults(func=_switch(active))
    reset = commands.add_parser("reset-mfa", help="make a staff account set up two-step sign-in again "
                                "(lost authenticator and recovery codes)")
    reset.add_argument("username")
    reset.set_defaults(func=cmd_reset_mfa)
    sign_out = commands.add_parser("sign-out", help="end every session of one staff account")
    sign_out.add_argument("username")
    sign_out.set_defaults(func=cmd_sign_out)
    set_password = commands.add_parser("set-password", help="give a staff account a new password (forgotten; "
                                       "typed, or --password-stdin)")
    set_password.add_argument("username")
    set_password.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    set_password.set_defaults(func=cmd_set_password)
    unlock = commands.add_parser("unlock", help="lift the sign-in locks of one staff account (too many "
                                 "failed attempts)")
    unlock.add_argument("username")
    unlock.set_defaults(func=cmd_unlock)


def _session_commands(commands: Commands) -> None:
    commands.add_parser("end-all", help="end every session of everyone (staff and customers)").set_defaults(
        func=cmd_end_all)
    customer = commands.add_parser("end-customer", help="end every session of one customer (by sign-in address)")
    customer.add_argument("email")
    customer.set_defaults(func=cmd_end_customer)
    commands.add_parser("reindex-email", help="rebuild the customers' sign-in index from their addresses on record "
                        "(once after upgrading to IDNA2008 address comparison)").set_defaults(func=cmd_reindex_email)
    unlock = commands.add_parser("unlock-customer", help="lift the sign-in locks of one customer (by sign-in "
                                 "address)")
    unlock.add_argument("email")
    unlock.set_defaults(func=cmd_unlock_customer)


def register(subparsers: Commands) -> None:
    register_group(subparsers, "staff", "staff account administration", _staff_commands)
    register_group(subparsers, "sessions", "session administration", _session_commands)
    outbox = subparsers.add_parser("outbox", help="show the last mails of the development outbox")
    outbox.add_argument("--last", type=int, default=5)
    outbox.set_defaults(func=cmd_outbox)
