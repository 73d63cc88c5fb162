"""The walking skeleton end to end: real processes, real browser, real database file."""

from __future__ import annotations

import re
import time

import pyotp
from playwright.sync_api import Page, expect

from e2e.conftest import Stack, check_accessibility

ERIKA_EMAIL = "erika.mustermann@example.org"
NEW_PHONE = "+49 30 9876543"


# Staff sign in with a password and an authenticator code; the demo accounts enrol an authenticator
# at their first sign-in here, as a new member of staff would. The tests play the authenticator app.
TOTP_SECRETS: dict[str, str] = {}
_LAST_STEP: dict[str, int] = {}
_STAFF_COOKIES: dict[str, list] = {}


def totp_code(user: str) -> str:
    """The code the app shows for the next step the server still accepts (codes are single-use; the
    server takes one step either side of now, so sign-ins in quick succession wait a little)."""
    now = int(time.time() // 30)
    step = max(_LAST_STEP.get(user, 0) + 1, now - 1)
    if step > now + 1:
        time.sleep((step - 1) * 30 - time.time() + 0.05)
    _LAST_STEP[user] = step
    return pyotp.TOTP(TOTP_SECRETS[user]).at(step * 30)


def enrol_authenticator(page: Page, user: str) -> None:
    """On the enrolment page: read the key as a user would type it into an app, confirm with a code."""
    expect(page.get_by_role("heading", name="Set up two-step sign-in")).to_be_visible()
    TOTP_SECRETS[user] = page.locator("#totp-secret").inner_text().strip()
    _LAST_STEP.pop(user, None)
    page.get_by_label("Code from the app").fill(totp_code(user))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    page.get_by_role("link", name="I have saved them, continue").click()


def password_then_code(page: Page, stack: Stack, user: str, password: str, check: bool = False) -> None:
    """The whole staff sign-in in the browser: password, then enrolment or the authenticator code."""
    page.goto(f"{stack.backoffice}/signin")
    if check:
        check_accessibility(page, "backoffice-signin")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r".*/signin/(enrol|mfa)$"))
    if page.url.endswith("/signin/enrol"):
        if check:
            check_accessibility(page, "backoffice-enrol")
        enrol_authenticator(page, user)
    else:
        if check:
            check_accessibility(page, "backoffice-mfa")
        page.get_by_label("Code").fill(totp_code(user))
        page.get_by_role("button", name="Sign in", exact=True).click()


def staff_sign_in(page: Page, stack: Stack, user: str = "admin", password: str = "mutual-admin-demo") -> None:
    """Signed in as `user`: through the whole sign-in the first time, then by reusing that session
    (as a browser would), so the suite does not wait for fresh authenticator codes."""
    if user in _STAFF_COOKIES:
        page.context.add_cookies(_STAFF_COOKIES[user])
        page.goto(f"{stack.backoffice}/")
    if user not in _STAFF_COOKIES or page.url.endswith("/signin"):  # first time, or signed out since
        password_then_code(page, stack, user, password, check=user not in _STAFF_COOKIES)
    expect(page.get_by_role("heading", name="Audit log" if user == "compliance" else "People",
                            exact=True)).to_be_visible()
    _STAFF_COOKIES[user] = [c for c in page.context.cookies() if c["name"] == "__Host-mutual-staff"]


def customer_sign_in(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.portal}/signin")
    check_accessibility(page, "portal-signin")
    page.get_by_label("Email address").fill(ERIKA_EMAIL)
    page.get_by_label("Password").fill("erika-portal-demo")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="My data")).to_be_visible()


def find_by_email(page: Page, email: str) -> None:
    page.get_by_label("Email, phone or name").fill(email)
    page.get_by_role("button", name="Search").click()


def test_staff_creates_a_person_and_finds_them_by_email(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack)
    check_accessibility(page, "backoffice-people")
    page.get_by_role("link", name="New person").click()
    expect(page.get_by_role("heading", name="New person")).to_be_visible()
    page.get_by_label("Given name").fill("Lena")
    page.get_by_label("Family name (required)").fill("Beispiel")
    page.get_by_label("Email").fill("lena@example")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("is not an email address")
    expect(page.get_by_label("Given name")).to_have_value("Lena")  # nothing lost
    check_accessibility(page, "backoffice-person-form-error")
    page.get_by_label("Email").fill("lena.beispiel@example.com")
    page.get_by_label("Date of birth").fill("1990-05-17")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Lena Beispiel")).to_be_visible()
    page.get_by_role("link", name="People", exact=True).click()
    find_by_email(page, "Lena.Beispiel@example.com")
    result = page.locator("#results").get_by_role("link", name="Lena Beispiel")
    expect(result).to_be_visible()
    assert "lena" not in page.url.lower()
    result.click()
    expect(page.get_by_role("heading", name="Lena Beispiel")).to_be_visible()
    expect(page.locator(".masked")).to_have_text("1990-••-••")
    check_accessibility(page, "backoffice-person")


def test_error_pages_explain_the_problem_accessibly(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack)
    page.goto(f"{stack.backoffice}/people/00000000-0000-4000-8000-000000000000")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    check_accessibility(page, "backoffice-not-found")
    page.get_by_role("button", name="Sign out admin").click()
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    staff_sign_in(page, stack, "support", "mutual-support-demo")
    page.goto(f"{stack.backoffice}/audit")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    check_accessibility(page, "backoffice-not-allowed")


def test_staff_reveals_a_birth_date_with_a_reason(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack)
    find_by_email(page, ERIKA_EMAIL)
    page.locator("#results").get_by_role("link", name="Erika Mustermann").click()
    page.get_by_text("Reveal date of birth").click()
    page.get_by_role("button", name="Reveal").click()
    expect(page.get_by_role("alert")).to_contain_text("say why")
    page.get_by_label("Reason (recorded in the audit log)").select_option(index=1)
    page.get_by_role("button", name="Reveal").click()
    expect(page.locator(".revealed-value")).to_have_text("1964-08-12")
    check_accessibility(page, "backoffice-person-revealed")
    page.reload()  # the reveal lasts a few minutes for this member of staff, then the mask returns
    expect(page.locator(".revealed-value")).to_have_text("1964-08-12")
    expect(page.get_by_text("revealed until")).to_be_visible()


def test_customer_corrects_their_phone_and_staff_sees_it(stack: Stack, page: Page, browser) -> None:
    customer_sign_in(page, stack)
    check_accessibility(page, "portal-profile")
    page.get_by_role("link", name="Correct my data").click()
    check_accessibility(page, "portal-profile-edit")
    page.get_by_label("Phone").fill(NEW_PHONE)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your changes are saved.")).to_be_visible()
    expect(page.get_by_text(NEW_PHONE)).to_be_visible()

    staff_context = browser.new_context()
    staff_page = staff_context.new_page()
    try:
        staff_sign_in(staff_page, stack)
        find_by_email(staff_page, ERIKA_EMAIL)
        staff_page.locator("#results").get_by_role("link", name="Erika Mustermann").click()
        expect(staff_page.get_by_text(NEW_PHONE)).to_be_visible()
    finally:
        staff_context.close()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Who accessed my data").click()
    table = page.locator("table")
    expect(table).to_contain_text("Staff (admin)")
    expect(table).to_contain_text("customer service")
    expect(table).to_contain_text("changed")
    check_accessibility(page, "portal-access")


def test_an_admin_erases_a_person_after_typing_erase(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack)
    page.get_by_role("link", name="New person").click()
    page.get_by_label("Family name (required)").fill("Loeschbar")
    page.get_by_label("Email").fill("loeschbar@example.com")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Loeschbar")).to_be_visible()
    page.get_by_role("button", name="Erase for good").click()
    expect(page.get_by_role("alert")).to_contain_text("type ERASE to confirm")
    check_accessibility(page, "backoffice-person-erase-confirm")
    page.get_by_label("Type ERASE to confirm").fill("ERASE")
    page.get_by_role("button", name="Erase for good").click()
    expect(page.get_by_text("The person was erased")).to_be_visible()
    find_by_email(page, "loeschbar@example.com")
    expect(page.locator("#results")).to_contain_text("Nobody matches")


def test_compliance_officer_sees_the_intact_audit_chain(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack, "compliance", "mutual-compliance-demo")
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(page.get_by_text("intact")).to_be_visible()
    check_accessibility(page, "backoffice-audit")
