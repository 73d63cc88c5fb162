"""Staff two-step sign-in in the browser: enrolment at the first sign-in, then password and code."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from e2e.conftest import Stack, check_accessibility
from e2e.test_journeys import password_then_code

# Only this test signs in as the sales demo account, so its first sign-in is the enrolment.
USER, PASSWORD = "sales", "mutual-sales-demo"


def test_staff_enrol_an_authenticator_then_sign_in_with_its_code(stack: Stack, page: Page) -> None:
    password_then_code(page, stack, USER, PASSWORD, check=True)  # first time: enrolment, recovery codes
    expect(page.get_by_role("heading", name="People", exact=True)).to_be_visible()
    page.goto(f"{stack.backoffice}/account/two-step")
    expect(page.get_by_text("unused recovery codes")).to_be_visible()
    check_accessibility(page, "backoffice-two-step")
    page.goto(f"{stack.backoffice}/account/sessions")
    check_accessibility(page, "backoffice-sessions")
    page.locator("form.signout button").click()
    expect(page.get_by_role("heading", name="Sign in to Backoffice")).to_be_visible()
    password_then_code(page, stack, USER, PASSWORD, check=True)  # second time: the code from the app
    expect(page.get_by_role("heading", name="People", exact=True)).to_be_visible()
    page.goto(f"{stack.backoffice}/account")
    check_accessibility(page, "backoffice-account")
