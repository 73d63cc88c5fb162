"""Outgoing mail: SMTP when MUTUAL_SMTP_HOST is set, otherwise .eml files in the development outbox.

The outbox holds addresses and live sign-in links in plain text, so it is used only in development mode
(MUTUAL_DEV=1) or when MUTUAL_MAIL_DEV_OUTBOX=1 asks for it (the test suite); elsewhere an unset SMTP
host stops the faces at start-up (`check_mail_settings`) and any mail is refused.

Recipients and bodies are personal data: they never appear in logs or error messages.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.policy
import email.utils
import logging
import os
import re
import secrets
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import anyio.to_thread

from server.settings import Settings, get_settings

TIMEOUT_SECONDS = 10
log = logging.getLogger("mutual.mail")
_LINK_RE = re.compile(r"https?://[^\s<>\"'()\[\]{}]+", re.IGNORECASE)


class MailNotSent(Exception):
    """Delivery failed; the message names the server and the fix, never the recipient or body."""


@dataclass(frozen=True)
class Mail:
    """One plain-text mail to one recipient; a line break in `to` or `subject` raises ValueError."""

    to: str
    subject: str
    text: str
    """Plain-text body."""


class MailNotConfigured(MailNotSent):
    """No SMTP host outside development: names the setting and the fix."""


def outbox_allowed(settings: Settings) -> bool:
    return settings.dev_mode or settings.mail_dev_outbox


def check_mail_settings(settings: Settings) -> None:
    """Raise MailNotConfigured when mail would go to the plain-text outbox outside development."""
    if not settings.smtp_host and not outbox_allowed(settings):
        raise MailNotConfigured(
            "MUTUAL_SMTP_HOST is not set: outside development mode Mutual sends sign-in links only over "
            "SMTP, never into a plain-text outbox; set MUTUAL_SMTP_HOST (and MUTUAL_SMTP_PORT/SECURITY/"
            "USER/PASSWORD, MUTUAL_MAIL_FROM), or MUTUAL_DEV=1 on a development machine")


async def send(mail: Mail) -> None:
    """Deliver `mail` over SMTP, or write it to the outbox when no SMTP host is configured and the
    outbox is allowed (development); MailNotConfigured otherwise."""
    settings = get_settings()
    check_mail_settings(settings)
    message = build_message(mail, settings)
    if settings.smtp_host:
        await anyio.to_thread.run_sync(_deliver, message, settings)
        log.info("mail sent: %s", _first_word(mail.subject))
    else:
        await anyio.to_thread.run_sync(_write_outbox, message, settings.mail_outbox)
        log.info("mail written to outbox: %s", _first_word(mail.subject))


def build_message(mail: Mail, settings: Settings) -> EmailMessage:
    """The RFC 5322 message: From, To, Subject, Date, Message-ID and a UTF-8 plain-text body."""
    message = EmailMessage(policy=email.policy.default)
    message["From"] = settings.mail_from
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = email.utils.make_msgid(domain=_domain(settings.mail_from))
    message.set_content(mail.text, charset="utf-8")
    return message


def outbox_messages(directory: Path) -> list[EmailMessage]:
    """The .eml files in `directory`, parsed, oldest first (their names start with the UTC time)."""
    if not directory.is_dir():
        return []
    parser = BytesParser(policy=email.policy.default)
    messages = []
    for path in sorted(directory.glob("*.eml")):
        with path.open("rb") as fh:
            parsed = parser.parse(fh)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def links_in(text: str) -> list[str]:
    """The http(s) URLs in `text`, in order, without trailing sentence punctuation."""
    return [m.group(0).rstrip(".,;:!?") for m in _LINK_RE.finditer(text)]


# --- delivery ----------------------------------------------------------------------------------

def _deliver(message: EmailMessage, settings: Settings) -> None:
    host, port, security = settings.smtp_host, settings.smtp_port, settings.smtp_security
    where = f"{host}:{port} ({security})"
    sender = email.utils.parseaddr(settings.mail_from)[1]
    try:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT_SECONDS, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS)
        with smtp:
            if security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise MailNotSent(
                        f"mail not sent: the SMTP server {where} does not offer STARTTLS and "
                        "mail is never sent in plain text; check MUTUAL_SMTP_HOST/PORT/SECURITY "
                        "(tls for port 465, none only for a relay on a trusted network)")
                smtp.starttls(context=context)
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password)
            smtp.send_message(message, from_addr=sender)  # recipients: the To header
    except MailNotSent:
        raise
    except (OSError, ValueError) as exc:
        # `from None`: smtplib's messages may quote the recipient, or the server's reply about it.
        raise MailNotSent(f"mail not sent via SMTP server {where}: {_reason(exc)}; "
                          "check MUTUAL_SMTP_HOST/PORT/SECURITY") from None


def _reason(exc: BaseException) -> str:
    """What went wrong, in words that hold no personal data."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"the server refused the login ({exc.smtp_code}), check MUTUAL_SMTP_USER/PASSWORD"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "the server refused the recipient"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the server answered {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    if isinstance(exc, smtplib.SMTPException):
        return type(exc).__name__
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


# --- the development outbox --------------------------------------------------------------------

def _write_outbox(message: EmailMessage, directory: Path) -> Path:
    """Write `message` to `<directory>/<UTC timestamp>-<random hex>.eml` (0600), atomically."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(message.as_bytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        raise MailNotSent(f"mail not written to the outbox {directory}: {exc.strerror}; "
                          "check MUTUAL_MAIL_OUTBOX, or set MUTUAL_SMTP_HOST") from None
    return target


def _domain(address: str) -> str:
    return email.utils.parseaddr(address)[1].rpartition("@")[2] or "localhost"


def _first_word(subject: str) -> str:
    words = subject.split()
    return words[0].strip(".,;:!?") if words else ""
