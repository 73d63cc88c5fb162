"""The compliance officer filters and exports the audit log; a customer filters who accessed their data."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from e2e.conftest import Stack, check_accessibility
from e2e.test_journeys import customer_sign_in, staff_sign_in


def test_the_compliance_officer_filters_the_audit_log_by_action_and_exports_it(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack, "compliance", "mutual-compliance-demo")
    page.get_by_label("Action").select_option("signin")
    page.get_by_role("button", name="Show events").click()
    table = page.get_by_role("table", name="Audit events, newest first (filtered)")
    expect(table).to_be_visible()
    actions = table.locator("tbody tr td:nth-child(6)").all_inner_texts()
    assert actions and set(actions) == {"signin"}
    expect(page.get_by_text("intact")).to_be_visible()
    expect(page.get_by_label("Action")).to_have_value("signin")
    check_accessibility(page, "backoffice-audit-filtered")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename.startswith("mutual-audit-")
    assert download.value.suggested_filename.endswith(".csv")


def test_a_customer_filters_who_accessed_their_data(stack: Stack, page: Page) -> None:
    customer_sign_in(page, stack)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Who accessed my data").click()
    page.get_by_label("What").select_option("read")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page).to_have_url(f"{stack.portal}/access?from=&to=&action=read&purpose=")
    whats = page.locator("table tbody tr td:nth-child(3)").all_inner_texts()
    assert whats and set(whats) == {"viewed"}
    check_accessibility(page, "portal-access-filtered")
