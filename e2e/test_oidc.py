"""Staff single sign-on in a real browser against a real OpenID provider process (oidc-provider-mock,
started by the `stack` fixture; its issuer URL is `stack.oidc`).

The provider's page is the mock's: one text field for the subject (placeholder "sub", no label)
and an "Authorize" button. What the subject's ID token says (user name, groups) is set at the
provider beforehand, as an identity provider's directory would hold it.
"""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, Route, expect

from e2e.conftest import Stack, check_accessibility
from tests.oidc_provider import set_user


def provider(stack: Stack) -> str:
    issuer = getattr(stack, "oidc", "")
    if not issuer:
        pytest.fail("the e2e stack runs no OpenID provider: e2e/conftest.py must start tests.oidc_provider."
                    "OidcProvider, give the backoffice its env() and put its issuer into Stack.oidc")
    return str(issuer)


def sso_button(page: Page):  # noqa: ANN201 - a Playwright locator
    return page.locator('form[action="/signin/sso"]').get_by_role("button")


def authorize_at_provider(page: Page, sub: str) -> None:
    """The mock provider's sign-in form: type the subject, press Authorize."""
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()


def test_staff_signs_in_through_the_identity_provider(stack: Stack, page: Page) -> None:
    issuer = provider(stack)
    sub = f"e2e-{uuid.uuid4().hex[:8]}"
    set_user(issuer, sub, {"preferred_username": "oidc-e2e-admin", "groups": ["crm-admins"], "amr": ["pwd", "otp"]})
    page.goto(f"{stack.backoffice}/signin")
    expect(sso_button(page)).to_be_visible()
    expect(sso_button(page)).to_contain_text("Sign in with")
    check_accessibility(page, "backoffice-signin-sso")
    sso_button(page).click()
    page.wait_for_url(f"{issuer}/oauth2/authorize?**")
    authorize_at_provider(page, sub)
    expect(page.get_by_role("heading", name="People", exact=True)).to_be_visible()
    assert page.url == f"{stack.backoffice}/people"
    expect(page.get_by_role("button", name="Sign out oidc-e2e-admin")).to_be_visible()
    # A full session: the admin's pages answer, no second-factor step in between.
    page.goto(f"{stack.backoffice}/people/new")
    expect(page.get_by_role("heading", name="New person")).to_be_visible()


def test_a_sales_group_lands_as_sales_through_the_forwarding_link(stack: Stack, page: Page) -> None:
    issuer = provider(stack)
    sub = f"e2e-{uuid.uuid4().hex[:8]}"
    set_user(issuer, sub, {"preferred_username": "oidc-e2e-sales", "groups": ["crm-sales"], "amr": ["pwd", "otp"]})

    def without_refresh(route: Route) -> None:
        """Keep the forwarding page on screen (as a browser that ignores Refresh would) to check it."""
        response = route.fetch()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "refresh"}
        route.fulfill(response=response, headers=headers)

    page.route("**/signin/sso", without_refresh)
    page.goto(f"{stack.backoffice}/signin")
    sso_button(page).click()
    expect(page.get_by_role("heading", name="Continue to")).to_be_visible()
    check_accessibility(page, "backoffice-signin-sso-continue")
    page.get_by_role("link", name="continue to").click()
    authorize_at_provider(page, sub)
    expect(page.get_by_role("heading", name="People", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out oidc-e2e-sales")).to_be_visible()
    page.goto(f"{stack.backoffice}/audit")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


def test_someone_without_a_mutual_role_is_told_why(stack: Stack, page: Page) -> None:
    issuer = provider(stack)
    sub = f"e2e-{uuid.uuid4().hex[:8]}"
    set_user(issuer, sub, {"preferred_username": "oidc-e2e-nobody", "groups": ["wiki-editors"]})
    page.goto(f"{stack.backoffice}/signin")
    sso_button(page).click()
    authorize_at_provider(page, sub)
    expect(page.get_by_role("alert")).to_have_text(
        "Your account at the identity provider has no role for Mutual; ask an administrator.")
    expect(page.get_by_label("User name")).to_be_visible()
    check_accessibility(page, "backoffice-signin-sso-no-role")
