"""Passkeys in a real browser: Chromium's virtual authenticator (over CDP) stands in for the device's
platform authenticator, so the page's script, navigator.credentials and the server meet for real."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import CDPSession, Page, expect

from e2e.conftest import Stack, check_accessibility

ERIKA_EMAIL = "erika.mustermann@example.org"
ERIKA_PASSWORD = "erika-portal-demo"


@dataclass(frozen=True)
class VirtualAuthenticator:
    cdp: CDPSession
    id: str

    def credentials(self) -> list[dict[str, Any]]:
        return list(self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})["credentials"])


@pytest.fixture
def authenticator(page: Page) -> Iterator[VirtualAuthenticator]:
    """A platform passkey authenticator (resident keys, user verification) in this browser tab."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    found = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    yield VirtualAuthenticator(cdp, found["authenticatorId"])
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": found["authenticatorId"]})


def _customer_password_sign_in(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.portal}/signin")
    page.get_by_label("Email address").fill(ERIKA_EMAIL)
    page.get_by_label("Password").fill(ERIKA_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="My data")).to_be_visible()


def test_a_customer_adds_a_passkey_and_signs_in_with_it(stack: Stack, page: Page,
                                                        authenticator: VirtualAuthenticator) -> None:
    _customer_password_sign_in(page, stack)
    page.goto(f"{stack.portal}/account/passkeys")
    expect(page.get_by_role("heading", name="Passkeys", exact=True)).to_be_visible()
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    check_accessibility(page, "portal-passkeys")

    page.get_by_label("Name of the passkey").fill("Laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_text("Passkey added.")).to_be_visible()
    expect(page.get_by_role("cell", name="Laptop", exact=True)).to_be_visible()
    check_accessibility(page, "portal-passkeys-added")
    [credential] = authenticator.credentials()
    assert credential["isResidentCredential"] and credential["rpId"] == "localhost"

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", name="My data")).to_be_visible()
    assert re.search(r"/profile$", page.url), page.url

    # The list now says when it was last used; remove it again so other tests start without one.
    page.goto(f"{stack.portal}/account/passkeys")
    expect(page.get_by_role("cell", name="Never")).to_have_count(0)
    page.get_by_role("button", name="Remove passkey Laptop").click()
    expect(page.get_by_text("Passkey removed.")).to_be_visible()
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()


def test_without_webauthn_the_passkey_button_explains_what_to_do(stack: Stack, page: Page) -> None:
    page.add_init_script("delete window.PublicKeyCredential;")
    page.goto(f"{stack.portal}/signin")
    page.get_by_role("button", name="Sign in with a passkey").click()
    alert = page.locator("#passkey-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("This browser cannot use passkeys")
    check_accessibility(page, "portal-signin-passkey-unsupported")


def test_a_cancelled_passkey_sign_in_shows_a_clear_message(stack: Stack, page: Page,
                                                           authenticator: VirtualAuthenticator) -> None:
    """No passkey for this site on the device: the browser refuses, and the page says so."""
    page.goto(f"{stack.backoffice}/signin")
    page.get_by_role("button", name="Sign in with a passkey").click()
    alert = page.locator("#passkey-error")
    expect(alert).to_contain_text("this device has no passkey for this site", timeout=15000)
    check_accessibility(page, "backoffice-signin-passkey-error")
