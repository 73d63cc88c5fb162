"""Email addresses compared as the mail system compares them, with a kept library (email-validator,
IDNA2008 through `idna`), never hand-written folding.

Two spellings are the same address only when they reach the same mailbox: the domain as its IDNA2008
A-label (lower-case ASCII: `groß-bau.de` is `xn--gro-bau-2va.de`, not `gross-bau.de`, and a Cyrillic
look-alike is a third domain) and the local part lower-cased, which must be ASCII. Unicode case folding
and NFKC, which the sign-in index used before, join addresses of different owners (ß and ss, full-width
letters), and so sent one person's sign-in link to another's domain.
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, ValidatedEmail, validate_email


class AddressInvalid(ValueError):
    """Not an address mail can be sent to; the message says what is wrong (from email-validator)."""


def _checked(value: str) -> ValidatedEmail:
    try:
        return validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise AddressInvalid(str(exc)) from None


def canonical_email(value: str) -> str:
    """The address for equality: lower-case ASCII local part @ IDNA2008 A-label domain. AddressInvalid
    when it is no address (or its local part is not ASCII)."""
    checked = _checked(value)
    return f"{checked.local_part.lower()}@{checked.ascii_domain}"


def mail_address(value: str) -> str:
    """The address as a mail is sent to it: the local part as stored, the domain as its A-label (plain
    SMTP needs no SMTPUTF8 for it). AddressInvalid when it is no address."""
    checked = _checked(value)
    return checked.ascii_email or f"{checked.local_part}@{checked.ascii_domain}"


def normalise_email(value: str) -> str:
    """The blind-index form of an email value: `canonical_email`, or for a value that is no valid
    address (older data, a search for one) the value itself in NFC, lower-cased, never folded, so it
    matches only itself."""
    try:
        return canonical_email(value)
    except AddressInvalid:
        return unicodedata.normalize("NFC", value).strip().lower()
