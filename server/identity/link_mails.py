"""The mails of emailed links: their texts, and sending them to the address on record from a background
task (a failure is logged without recipient or text, never raised: the response has gone already)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from server.crm import service as people
from server.mail import Mail, MailNotSent, send
from server.settings import get_settings

log = logging.getLogger("mutual.identity.email_links")


def link_mail(purpose: str, to: str, link: str) -> Mail:
    minutes = get_settings().email_link_minutes
    what = {
        "signin": ("Your sign-in link", "asked to sign in to the Mutual portal with this address. "
                                        "To sign in, open this link and press the button:"),
        "verify": ("Confirm your email address", "signed up for the Mutual portal with this address. "
                                                 "To confirm that it is yours, open this link and press "
                                                 "the button:"),
        "reset": ("Set a new password", "asked to set a new password for the Mutual portal account of "
                                        "this address. To set one, open this link and press the button:"),
    }[purpose]
    text = (f"Hello,\n\nsomeone (hopefully you) {what[1]}\n\n{link}\n\n"
            f"The link works once, for {minutes} minutes, and only in the same browser where it was "
            "asked for.\n\nIf this was not you, ignore this mail: nothing changes.\n\n-- Mutual\n")
    return Mail(to=to, subject=what[0], text=text)


def existing_account_mail(to: str, origin: str) -> Mail:
    text = ("Hello,\n\nsomeone (hopefully you) tried to sign up for the Mutual portal with this "
            "address, but it already has an account.\n\n"
            f"Sign in here:\n{origin}/signin\n\n"
            f"Or ask for a sign-in link, no password needed:\n{origin}/signin/email\n\n"
            f"Forgot your password? Set a new one here:\n{origin}/signin/reset\n\n"
            "If this was not you, ignore this mail: nothing changes.\n\n-- Mutual\n")
    return Mail(to=to, subject="You already have an account", text=text)


async def _send(mail: Mail) -> None:
    """Send from a background task: a failure is logged (without recipient or text), never raised,
    because the response has gone already."""
    try:
        await send(mail)
    except MailNotSent as exc:
        log.warning("%s", exc)  # names the server and the fix, never the recipient
    except Exception as exc:  # noqa: BLE001 - nobody is left to raise to
        log.error("mail not sent: %s", type(exc).__name__)


async def mail_on_record(person_id: uuid.UUID, make: Callable[[str], Mail]) -> None:
    """Send a mail to the person's address on record, never to an address from a form: two spellings
    that share the sign-in index (a look-alike domain) must not share the mailbox a link goes to."""
    to = await people.address_on_record(person_id)
    if to is None:
        log.warning("mail not sent: the account's person has no email address on record")
        return
    await _send(make(to))
