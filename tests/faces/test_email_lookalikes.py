"""Look-alike addresses: links and account mails go to the address on record, and two spellings share
an account only when they reach the same mailbox (IDNA2008 domains, lower-case ASCII local parts)."""

from __future__ import annotations

import pytest

from server.errors import Invalid
from server.identity.email_links import check_email
from server.vault import AddressInvalid, canonical_email, mail_address, normalise_email
from tests.faces._client import face_client, make_customer
from tests.faces.test_email_links import _ask_link, _link, _mails_to, _sign_up, no_links_left, smtp, wired
from tests.smtp_server import SmtpServer
from tests.support import ERIKA

__all__ = ["no_links_left", "smtp", "wired"]  # fixtures of the email-link tests, used here too

ERIKA_AT_GROSS_BAU = {**ERIKA, "email": "erika@groß-bau.de"}
"""Erika's address on a domain with ß: IDNA2008 keeps it (xn--gro-bau-2va.de); gross-bau.de is another domain."""


def test_domains_compare_as_idna2008_a_labels_and_local_parts_in_lower_case() -> None:
    assert canonical_email("anna@groß-bau.de") == "anna@xn--gro-bau-2va.de"
    assert canonical_email("anna@gross-bau.de") == "anna@gross-bau.de"
    assert canonical_email(" Anna@GROSS-Bau.DE ") == "anna@gross-bau.de"
    cyrillic_o = "anna@gr\u043ess-bau.de"
    assert canonical_email(cyrillic_o) not in {"anna@gross-bau.de", "anna@xn--gro-bau-2va.de"}
    assert normalise_email("anna@groß-bau.de") != normalise_email("anna@gross-bau.de")
    assert mail_address("Erika@Groß-Bau.de") == "Erika@xn--gro-bau-2va.de"


def test_an_address_with_a_non_ascii_local_part_is_refused_with_the_reason() -> None:
    with pytest.raises(AddressInvalid):
        canonical_email("straße@example.org")
    with pytest.raises(Invalid) as refused:
        check_email("straße@example.org")
    assert "before the @-sign" in refused.value.errors["email"]
    assert "name@example.org" in refused.value.errors["email"]


async def test_a_sign_in_link_for_a_lookalike_domain_reaches_nobody(db: None, smtp: SmtpServer) -> None:
    """The attack: register gross-bau.de and ask for a link to erika@gross-bau.de; NFKC + casefold took
    it for Erika's erika@groß-bau.de and mailed her working link to the attacker's domain."""
    await make_customer(ERIKA_AT_GROSS_BAU)
    async with face_client("portal") as client:
        await _ask_link(client, "erika@gross-bau.de")
        await _ask_link(client, "erika@gross-bau.de", "/signin/reset")
    assert smtp.messages == [], [m["To"] for m in smtp.messages]


async def test_a_link_is_mailed_to_the_stored_address_not_the_typed_spelling(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA_AT_GROSS_BAU)
    async with face_client("portal") as client:
        await _ask_link(client, "ERIKA@GROß-BAU.DE")  # the same mailbox, typed another way
        await _ask_link(client, "Erika@Groß-Bau.de", "/signin/reset")
    assert [m["To"] for m in smtp.messages] == ["erika@xn--gro-bau-2va.de"] * 2
    assert _link(smtp.messages[0])


async def test_signing_up_with_a_known_address_typed_otherwise_tells_the_owner_at_their_address(
        db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        await _sign_up(client, {"given_name": "Someone", "family_name": "Else", "email": ERIKA["email"].upper()})
    [mail] = smtp.messages
    assert mail["To"] == ERIKA["email"] and mail["Subject"] == "You already have an account"
    assert _mails_to(smtp, ERIKA["email"].upper()) == []


async def test_an_account_indexed_the_old_way_is_rebuilt_to_its_own_spelling_and_off_the_lookalike(
        db: None, smtp: SmtpServer) -> None:
    """Before IDNA2008, NFKC + casefold indexed erika@groß-bau.de as erika@gross-bau.de; the rebuild
    (`mutual sessions reindex-email`) moves it to its own A-label, so the look-alike finds nothing."""
    import unicodedata

    from server.identity.email_links import reindex_signin_addresses
    from server.identity.tables import CustomerAccount
    from server.kernel import get_kernel
    from server.vault import blind_index

    await make_customer(ERIKA_AT_GROSS_BAU)
    old_form = unicodedata.normalize("NFKC", ERIKA_AT_GROSS_BAU["email"]).casefold()
    await CustomerAccount.update({CustomerAccount.email_index: blind_index(get_kernel().keys, "signin", old_form)},
                                 force=True)
    assert await reindex_signin_addresses() == 1
    assert await reindex_signin_addresses() == 0, "a second run changes nothing"
    async with face_client("portal") as client:
        await _ask_link(client, "erika@gross-bau.de")
        assert smtp.messages == []
        await _ask_link(client, ERIKA_AT_GROSS_BAU["email"])
    assert [m["To"] for m in smtp.messages] == ["erika@xn--gro-bau-2va.de"]
