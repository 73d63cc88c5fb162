"""The compliance officer opens the record of processing from the navigation and downloads it."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from e2e.conftest import Stack, check_accessibility
from e2e.test_journeys import staff_sign_in


def test_the_compliance_officer_opens_and_downloads_the_record_of_processing(stack: Stack, page: Page) -> None:
    staff_sign_in(page, stack, "compliance", "mutual-compliance-demo")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Record of processing").click()
    expect(page.get_by_role("heading", name="Record of processing activities", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Customer service", level=2)).to_be_visible()
    expect(page.get_by_role("table", name="Personal data processed for Sales, and how long it is kept")
           ).to_contain_text("contact.email")
    check_accessibility(page, "backoffice-records")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV (for spreadsheets)").click()
    assert download.value.suggested_filename == "mutual-record-of-processing.csv"
    expect(page.get_by_role("heading", name="Record of processing activities", level=1)).to_be_visible()
