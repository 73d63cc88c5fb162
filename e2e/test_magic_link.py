"""Emailed links end to end: ask for a sign-in link, read it from the SMTP server the stack sends to,
open it in the same browser and sign in; sign up and confirm the address the same way.

Needs the `smtp` fixture of e2e/conftest.py: a tests.smtp_server.SmtpServer that the portal process
sends its mail to (MUTUAL_SMTP_HOST/PORT, MUTUAL_SMTP_SECURITY=none)."""

from __future__ import annotations

from email.message import EmailMessage

from playwright.sync_api import Browser, Page, expect

from e2e.conftest import Stack, check_accessibility
from server.mail import links_in
from tests.smtp_server import SmtpServer

ERIKA_EMAIL = "erika.mustermann@example.org"
NEW_CUSTOMER = {"Given name": "Paula", "Family name (required)": "Muster",
                "Email address (required)": "paula.muster@example.net"}


def _next_link(smtp: SmtpServer, seen: set[int], to: str, subject: str) -> str:
    """The link of the first mail to `to` with `subject` that arrived after `seen` was taken."""
    mail: EmailMessage = smtp.wait_for(lambda m: id(m) not in seen and m["To"] == to and m["Subject"] == subject)
    body = mail.get_body(("plain",))
    assert body is not None
    [link] = [u for u in links_in(body.get_content()) if "/signin/email/open" in u]
    return link


def _seen(smtp: SmtpServer) -> set[int]:
    return {id(m) for m in smtp.messages}


def test_a_customer_signs_in_with_an_emailed_link(stack: Stack, page: Page, smtp: SmtpServer) -> None:
    page.goto(f"{stack.portal}/signin")
    page.get_by_role("link", name="Email me a sign-in link").click()
    expect(page.get_by_role("heading", name="Email me a sign-in link")).to_be_visible()
    check_accessibility(page, "portal-email-link-request")
    seen = _seen(smtp)
    page.get_by_label("Email address").fill(ERIKA_EMAIL)
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_text("If an account exists for that address, we sent a sign-in link.")).to_be_visible()
    check_accessibility(page, "portal-email-link-sent")
    link = _next_link(smtp, seen, ERIKA_EMAIL, "Your sign-in link")
    assert link.startswith(f"{stack.portal}/signin/email/open?t=")
    page.goto(link)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check_accessibility(page, "portal-email-link-open")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="My data")).to_be_visible()
    assert page.url == f"{stack.portal}/profile"
    # The link worked once: opening it again explains and offers a new one.
    page.goto(link)
    expect(page.get_by_role("alert")).to_contain_text("has been used already")
    check_accessibility(page, "portal-email-link-refused")


def test_a_link_opened_in_another_browser_is_refused(stack: Stack, page: Page, browser: Browser,
                                                     smtp: SmtpServer) -> None:
    page.goto(f"{stack.portal}/signin/email")
    seen = _seen(smtp)
    page.get_by_label("Email address").fill(ERIKA_EMAIL)
    page.get_by_role("button", name="Email me a link").click()
    link = _next_link(smtp, seen, ERIKA_EMAIL, "Your sign-in link")
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        elsewhere.goto(link)
        expect(elsewhere.get_by_role("alert")).to_contain_text(
            "Open the link in the same browser where you asked for it")
        expect(elsewhere.get_by_role("link", name="Ask for a new link here")).to_be_visible()
    finally:
        other.close()


def test_a_new_customer_signs_up_and_confirms_the_address(stack: Stack, page: Page, smtp: SmtpServer) -> None:
    page.goto(f"{stack.portal}/signin")
    page.get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
    check_accessibility(page, "portal-signup")
    page.get_by_label("Email address (required)").fill("paula@example")
    page.get_by_label("Family name (required)").fill("Muster")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("is not an email address")
    check_accessibility(page, "portal-signup-error")
    seen = _seen(smtp)
    for label, value in NEW_CUSTOMER.items():
        page.get_by_label(label).fill(value)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("Check your inbox: we sent a link to confirm the address.")).to_be_visible()
    link = _next_link(smtp, seen, NEW_CUSTOMER["Email address (required)"], "Confirm your email address")
    page.goto(link)
    expect(page.get_by_role("heading", name="Confirm your email address")).to_be_visible()
    check_accessibility(page, "portal-email-verify-open")
    page.get_by_role("button", name="Confirm my address").click()
    expect(page.get_by_role("heading", name="My data")).to_be_visible()
    expect(page.get_by_text("Paula", exact=True)).to_be_visible()


def test_the_password_reset_request_page_is_accessible(stack: Stack, page: Page, smtp: SmtpServer) -> None:
    page.goto(f"{stack.portal}/signin/reset")
    expect(page.get_by_role("heading", name="Forgot your password?")).to_be_visible()
    check_accessibility(page, "portal-password-reset-request")
    seen = _seen(smtp)
    page.get_by_label("Email address").fill(ERIKA_EMAIL)
    page.get_by_role("button", name="Email me a link").click()
    link = _next_link(smtp, seen, ERIKA_EMAIL, "Set a new password")
    page.goto(link)
    page.get_by_role("button", name="Set a new password").click()
    expect(page).to_have_url(f"{stack.portal}/account/password")
