"""What the composer catches before anything is lost or sent by mistake: no subject, attachments over the
limit, an unfinished address, a failed autosave."""

from __future__ import annotations

import pytest
from django.test import Client

from mailbox.models import OutgoingMessage
from tests.browser.test_mail_ui import gmail_ui, sign_in, wait_for  # noqa: F401 (gmail_ui: a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sending_without_a_subject_asks_first(page, live_server, alice, gmail_ui):  # noqa: F811
    client = Client()
    client.force_login(alice)  # not sign_in(): its guard dismisses every dialog, and this one must be answered
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto(live_server.url + "/compose/")
    page.fill("input[name=to]", "bob@example.org")
    page.fill("textarea[name=body_text]", "No subject here")
    asked: list[str] = []

    def answer(dialog, accept: bool) -> None:
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.click("#send-button")
    page.wait_for_timeout(300)
    assert asked == ["Send this message without a subject?"]
    assert page.url.endswith("/compose/") or "/drafts/" in page.url
    assert not OutgoingMessage.objects.exclude(status=OutgoingMessage.Status.DRAFT).exists()

    page.once("dialog", lambda d: answer(d, True))
    with page.expect_navigation():
        page.click("#send-button")
    assert page.url.endswith("/outbox/")
    assert OutgoingMessage.objects.exclude(status=OutgoingMessage.Status.DRAFT).get().subject == ""


def test_attachments_over_the_limit_are_refused_before_upload(page, live_server, alice, gmail_ui):  # noqa: F811
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/compose/")
    assert page.is_hidden(".attach-error")
    big = {"name": "video.bin", "mimeType": "application/octet-stream", "buffer": b"\0" * (26 * 1024 * 1024)}
    page.set_input_files("input[name=files]", files=[big])
    assert page.is_visible(".attach-error")
    assert page.evaluate("document.querySelector('input[name=files]').files.length") == 0
    small = {"name": "note.txt", "mimeType": "text/plain", "buffer": b"hello"}
    page.set_input_files("input[name=files]", files=[small])
    assert page.is_hidden(".attach-error")
    guard.assert_clean()


def test_an_unfinished_address_does_not_stop_autosave_and_a_failed_save_is_said(page, live_server, alice, gmail_ui):  # noqa: F811
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/compose/")
    page.fill("input[name=to]", "bob@example.org, grace")
    page.fill("textarea[name=body_text]", "Half-written")
    status = page.locator(".autosave-status")
    wait_for(page, lambda: "Draft saved at" in status.inner_text(), timeout=10)
    draft = OutgoingMessage.objects.get(body_text="Half-written")
    assert [p["email"] for p in draft.to] == ["bob@example.org", "grace"]

    page.route("**/drafts/*/", lambda route: route.abort() if route.request.method == "POST" else route.continue_())
    page.fill("textarea[name=body_text]", "Half-written, and more")
    wait_for(page, lambda: "Draft not saved yet" in status.inner_text(), timeout=10)
    page.unroute("**/drafts/*/")
    wait_for(page, lambda: "Draft saved at" in status.inner_text(), timeout=10)  # it tries again by itself
    draft.refresh_from_db()
    assert draft.body_text == "Half-written, and more"
    guard.assert_clean()
