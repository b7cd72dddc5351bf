"""The first visitor of a fresh workshop server who opens a page's address directly sees the sign-in screen only.

Until some session has run app.py's `st.navigation`, Streamlit 1.67 answers a request for `/model` by running
`pages/model.py` itself (its v1 multipage mode), without app.py's sign-in gate. Each page module only defines its
page as a function, so such a run draws nothing of the page, and runs app.py in its place
(ui.navigation.run_app_instead). Each test starts its own server, so its first address is the server's first request.
"""

from __future__ import annotations

import pytest

from tests.workshop_server import ARTIFACTS, launch_chromium, wait_idle

pytestmark = pytest.mark.slow

PAGE_TITLES = ("Data", "Model", "Train", "Runs", "Evaluate", "Predict & export", "Trainer")
ADDRESSES = ("model", "train", "runs", "data", "trainer")


def assert_sign_in_screen_only(page, address: str) -> None:  # noqa: ANN001 - Playwright's Page
    """The sign-in form, and none of a page: no page title, no navigation to the pages, no uploader, no error."""
    from playwright.sync_api import expect

    expect(page.get_by_label("User name", exact=True)).to_be_visible(timeout=90_000)
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / f"first-visitor-{address}.png"), full_page=True)
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    for title in PAGE_TITLES:
        assert page.get_by_role("heading", name=title, exact=True).count() == 0, f"/{address} drew the {title} page"
    assert page.get_by_test_id("stSidebarNav").count() == 0, f"/{address} shows a navigation to other pages"
    assert page.get_by_test_id("stFileUploader").count() == 0, f"/{address} shows a file uploader"
    assert page.get_by_test_id("stException").count() == 0, f"/{address} shows an error"
    assert page.get_by_text("Signed in as").count() == 0


@pytest.mark.parametrize("first", ["model", "train", "runs"])
def test_the_first_visitor_of_a_fresh_server_sees_only_sign_in(workshop_server, first: str) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    url = workshop_server.url
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            visitor = browser.new_context(viewport={"width": 1280, "height": 900})
            for address in (first, *(other for other in ADDRESSES if other != first)):
                page = visitor.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{url}/{address}")
                assert_sign_in_screen_only(page, address)
                page.close()
        finally:
            browser.close()
    assert "Traceback" not in workshop_server.log()
