"""Drafts that live at Gmail too, labels made from Mailhub, and rich-text signatures, in Debian's Chromium against
the sandbox Gmail API (tasks run eagerly: a saved draft's sync runs at once)."""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy
from email.utils import format_datetime, make_msgid

import pytest
from django.utils import timezone

from mailbox.models import Folder, OutgoingMessage, Signature
from tests.browser.test_mail_ui import gmail_ui, sign_in, wait_for  # noqa: F401 (gmail_ui: a fixture)
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _subjects(gmail, email: str) -> set[str]:
    found = set()
    for view in gmail.drafts(email).values():
        found.add(str(message_from_bytes(view.raw, policy=email_policy.default)["Subject"]))
    return found


def test_a_draft_typed_here_is_in_gmail_and_one_from_gmail_is_finished_here(
    page,
    live_server,
    alice,
    gmail_ui,  # noqa: F811
    sends_at_once,
):
    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/compose/")
    page.fill("input[name=to]", "dana@example.org")
    page.fill("input[name=subject]", "Typed in Mailhub")
    page.fill("textarea[name=body_text]", "Half written")
    wait_for(page, lambda: "Typed in Mailhub" in _subjects(gmail, account.email))  # autosaved, then copied

    raw = "\r\n".join([
        f"From: {account.email}", "To: erin@example.org", "Subject: Started on my phone",
        f"Date: {format_datetime(timezone.now())}", f"Message-ID: {make_msgid(domain='gmail.com')}",
        "Content-Type: text/plain; charset=utf-8", "", "Written in Gmail", "",
    ]).encode()  # fmt: skip
    gmail.draft_create(account.email, raw)
    page.goto(live_server.url + "/")
    page.click(f".nav-account[data-account='{account.pk}'] button:has-text('Sync now')")
    page.goto(live_server.url + "/drafts/")
    assert page.locator(".thread-row").count() == 2
    screenshot(page, "drafts-both-ways")
    page.click(".thread-row:has-text('Started on my phone') a")
    assert page.input_value("textarea[name=body_text]").strip() == "Written in Gmail"
    page.fill("textarea[name=body_text]", "Written in Gmail, finished in Mailhub")
    page.click("#send-button")
    page.wait_for_url("**/outbox/")
    sent = [message_from_bytes(m.raw, policy=email_policy.default) for m in gmail.sent_messages(account.email)]
    assert [str(m["Subject"]) for m in sent] == ["Started on my phone"]
    assert "finished in Mailhub" in sent[0].get_body(("plain",)).get_content()
    wait_for(page, lambda: _subjects(gmail, account.email) == {"Typed in Mailhub"})  # no longer a draft at Gmail
    assert OutgoingMessage.objects.filter(status="draft").count() == 1
    guard.assert_clean()


def test_labels_are_made_nested_from_mailhub_and_shown_as_a_tree(
    page,
    live_server,
    alice,
    gmail_ui,  # noqa: F811
):
    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    page.click(f".nav-account[data-account='{account.pk}'] a.manage-folders")
    page.fill("form.inline-form input[name=name]", "Projects")
    page.click("form.inline-form button[type=submit]")
    projects = Folder.objects.get(account=account, name="Projects")
    page.fill("form.inline-form input[name=name]", "Alpha")
    page.select_option("form.inline-form select[name=parent]", str(projects.pk))
    page.click("form.inline-form button[type=submit]")
    assert {label["name"] for label in gmail.labels(account.email) if label["type"] == "user"} == {
        "Projects",
        "Projects/Alpha",
    }
    nested = page.locator(".mail-nav .folders li.depth-1")
    assert nested.inner_text().strip() == "Alpha"
    screenshot(page, "labels-tree")

    page.fill(".folder-tree li:has-text('Alpha') input[name=name]", "Beta")
    page.click(".folder-tree li:has-text('Alpha') button:has-text('Rename')")
    assert page.locator(".mail-nav .folders li.depth-1").inner_text().strip() == "Beta"
    assert "Projects/Beta" in {label["name"] for label in gmail.labels(account.email)}
    guard.assert_clean()


def test_a_rich_text_signature_is_written_in_the_editor(page, live_server, alice, gmail_ui):  # noqa: F811
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/preferences/")
    new = page.locator("form.signature-new")
    new.locator("input[name=new-name]").fill("Work")
    editor = new.locator(".prose-editor .ProseMirror")
    editor.click()
    page.keyboard.press("Control+b")
    page.keyboard.type("Alice Martin")
    page.keyboard.press("Control+b")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Sales")
    screenshot(page, "signature-editor")
    new.locator("button[type=submit]").click()
    page.wait_for_url("**/preferences/#signatures")
    signature = Signature.objects.get(user=alice)
    assert "<strong>Alice Martin</strong>" in signature.html
    assert signature.text == "Alice Martin\nSales"
    guard.assert_clean()
