"""Sign out, then in again, as a user (not an administrator) does it: through Mailhub's own pages only."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in_with_the_form(page, live_server, password: str) -> None:
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", password)
    page.click("button[type=submit].primary")
    page.wait_for_load_state("networkidle")


def test_sign_out_lands_on_mailhubs_sign_in_page_and_signing_in_again_works(page, live_server, alice):
    page.goto(live_server.url + "/login/")
    sign_in_with_the_form(page, live_server, "alice-password-1")
    assert page.url == live_server.url + "/"

    page.click("text=Sign out")
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(live_server.url + "/login/")
    assert page.locator("text=You have signed out.").is_visible()
    assert "Django administration" not in page.content() and "Log in again" not in page.content()

    # Signed out for real: the inbox asks for a sign-in again, and the same password works.
    page.goto(live_server.url + "/")
    assert page.url.startswith(live_server.url + "/login/")
    sign_in_with_the_form(page, live_server, "alice-password-1")
    assert page.url == live_server.url + "/"
    assert page.locator("text=Sign out").is_visible()
