"""The mail UI in Debian's Chromium: hostile mail stays inert, and the main journeys against the sandbox Gmail.

Every test fails if the page sends any request to a host other than the loopback one, or if any dialog opens.
"""

from __future__ import annotations

import time
from datetime import timedelta
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import MailAccount
from mailbox import sync
from mailbox.models import Attachment, Message, OutgoingMessage, SyncState
from tests.fixtures.browser import screenshot
from tests.fixtures.mail import gmail_account_create
from tests.fixtures.ui import (
    HTML_BODY,
    mailbox_create,
    message_add,
    pdf_bytes,
    png_bytes,
    raw_html_message,
    raw_text_message,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CORPUS = sorted((Path(__file__).parent / "hostile").glob("*.html"))
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Guard:
    """Records any request for a non-loopback host (and aborts it) and any dialog (alert/confirm/prompt)."""

    def __init__(self, page) -> None:
        self.remote: list[str] = []
        self.remote_types: set[str] = set()
        self.dialogs: list[str] = []
        page.context.route("**/*", self._route)
        page.on("dialog", self._dialog)

    def _route(self, route) -> None:
        url = route.request.url
        if urlsplit(url).hostname not in LOOPBACK:
            self.remote.append(url)
            self.remote_types.add(route.request.resource_type)
            route.abort()
        else:
            route.continue_()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def watch_scripts(self, page) -> None:
        """Record every script V8 compiles in the page's own JavaScript worlds, other than our static files."""
        self.scripts: list[str] = []
        cdp = page.context.new_cdp_session(page)
        cdp.on("Debugger.scriptParsed", self._script)
        cdp.send("Debugger.enable")

    def _script(self, event: dict) -> None:
        aux = event.get("executionContextAuxData") or {}
        url = event.get("url", "")
        ours = ("/static/mailbox/htmx.min.js", "/static/mailbox/mailbox.js", "/static/mailhub.js")
        if aux.get("isDefault") and not url.endswith(ours):
            self.scripts.append(url or "(inline)")

    def assert_clean(self) -> None:
        assert self.remote == [], f"requests left for remote hosts: {self.remote}"
        assert self.dialogs == [], f"script ran and opened dialogs: {self.dialogs}"


def sign_in(page, live_server, user) -> Guard:
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    return Guard(page)


def wait_for(page, predicate, timeout: float = 10.0):
    """Poll ``predicate``; waits through Playwright so its event loop (and our request router) keeps running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError("condition not met in time")


def frames_loaded(page) -> None:
    page.wait_for_load_state("networkidle")
    for frame in page.frames[1:]:
        frame.wait_for_load_state("load")


# --- Hostile HTML ---------------------------------------------------------------------------------


def test_hostile_corpus_runs_no_script_and_loads_nothing_remote(page, live_server, alice):
    account, folders = mailbox_create(user=alice, email="alice@hostile.example")
    messages = []
    for path in CORPUS:
        raw, _ = raw_html_message(
            subject=f"Hostile {path.stem}", html=path.read_text(), sender="Mallory <m@evil.example>"
        )
        messages.append(message_add(account, raw, folders=[folders["INBOX"]]))
    guard = sign_in(page, live_server, alice)
    guard.watch_scripts(page)
    titles = []
    for message in messages:
        page.goto(live_server.url + reverse("mailbox:thread", args=[message.thread_id]))
        frames_loaded(page)
        assert page.locator("iframe.message-body").count() == 1
        titles.append(page.title())
        # The body document on its own, as a top-level page: its CSP still forbids scripts and remote loads.
        page.goto(live_server.url + reverse("mailbox:message_body", args=[message.id]))
        page.wait_for_load_state("networkidle")
        assert urlsplit(page.url).hostname in LOOPBACK
    page.wait_for_timeout(500)  # a late meta refresh or timer would show up here
    guard.assert_clean()
    assert guard.scripts == [], f"scripts compiled: {guard.scripts}"
    assert all(t.startswith("Hostile ") for t in titles)
    # Hovering, clicking and focusing inside a hostile message does nothing either.
    page.goto(live_server.url + reverse("mailbox:thread", args=[messages[1].thread_id]))
    frames_loaded(page)
    body = page.frame_locator("iframe.message-body").locator("body")
    body.hover()
    body.click()
    page.wait_for_timeout(300)
    guard.assert_clean()
    # After "Show images" remote images may load (the user asked), but still no script and nothing else remote.
    for message in messages:
        page.goto(live_server.url + reverse("mailbox:message_body", args=[message.id]) + "?images=1")
        page.wait_for_load_state("networkidle")
    assert guard.dialogs == []
    assert guard.remote and guard.remote_types == {"image"}, guard.remote_types


# --- Journeys against the sandbox Gmail ------------------------------------------------------------


@pytest.fixture
def gmail_ui(alice, google_app, sandbox_settings, eager_celery):
    account = gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice)
    gmail = sandbox_settings.gmail
    raw, mid = raw_html_message(
        subject="Quarterly report",
        html=HTML_BODY,
        text="Quarterly figures: 42",
        sender="Dana Report <dana@example.org>",
        to=account.email,
        inline_images=[("logo@example.org", png_bytes())],
        attachments=[("report.pdf", "application/pdf", pdf_bytes("white", "lightblue"))],
    )
    ids = {"report": gmail.insert_message(account.email, raw)}
    for hours, (subject, sender) in enumerate(
        [
            ("Project kickoff", "Erin <erin@example.org>"),
            ("Lunch on Friday?", "Carol <carol@example.org>"),
            ("Weekly digest", "News <news@example.org>"),
        ],
        start=1,
    ):
        raw, _ = raw_text_message(
            subject=subject,
            body=f"{subject} body text",
            sender=sender,
            to=account.email,
            when=timezone.now() - timedelta(hours=hours),
        )
        ids[subject] = gmail.insert_message(account.email, raw)
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    assert Message.objects.filter(account=account).count() == 4
    return {"account": account, "gmail": gmail, "ids": ids, "report_message_id": mid}


def test_read_thread_with_inline_image_then_reply_with_attachment(page, live_server, alice, gmail_ui, sends_at_once):
    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    rows = page.locator(".thread-row")
    assert rows.count() == 4
    assert "Quarterly report" in rows.first.inner_text()
    screenshot(page, "inbox")

    page.click("text=Quarterly report")
    page.wait_for_url("**/thread/*/")
    frames_loaded(page)
    logo = page.frame_locator("iframe.message-body").locator("img[alt=logo]")
    assert wait_for(page, lambda: logo.evaluate("img => img.complete && img.naturalWidth") == 24)
    assert page.locator("iframe.message-body").evaluate("f => f.getBoundingClientRect().height") > 150
    assert page.is_visible("text=Show images")  # the tracking pixel stayed out
    assert [t.split()[0] for t in page.locator(".attachments li").all_inner_texts()] == [
        "report.pdf"
    ]  # the logo is inline
    screenshot(page, "thread")
    # Opening marked it read, here and in Gmail.
    message = Message.objects.get(account=account, subject="Quarterly report")
    wait_for(page, lambda: Message.objects.get(pk=message.pk).is_read)
    assert "UNREAD" not in gmail.message(account.email, gmail_ui["ids"]["report"]).label_ids

    page.click("button[data-key=r]")
    page.wait_for_url("**/drafts/*/")
    assert page.input_value("input[name=to]") == "Dana Report <dana@example.org>"
    assert page.input_value("input[name=subject]") == "Re: Quarterly report"
    page.locator("textarea[name=body_text]").press("Control+Home")
    page.locator("textarea[name=body_text]").type("Thanks, figures attached.")
    page.set_input_files(
        "input[name=files]",
        files=[{"name": "figures.csv", "mimeType": "text/csv", "buffer": b"quarter,value\nQ3,42\n"}],
    )
    # Autosave keeps the typed text in the draft (files are added on save or send).
    wait_for(page, lambda: OutgoingMessage.objects.filter(body_text__startswith="Thanks, figures attached.").exists())
    screenshot(page, "compose")
    page.click("#send-button")
    page.wait_for_url("**/outbox/")
    assert "Sent" in page.inner_text("#outbox-table")
    sent = gmail.sent_messages(account.email)
    assert len(sent) == 1
    mail = message_from_bytes(sent[0].raw, policy=email_policy.default)
    assert mail["In-Reply-To"] == f"<{gmail_ui['report_message_id']}>"
    assert [p.get_filename() for p in mail.iter_attachments()] == ["figures.csv"]
    assert "Thanks, figures attached." in mail.get_body(("plain",)).get_content()
    assert sent[0].thread_id == gmail.message(account.email, gmail_ui["ids"]["report"]).thread_id
    assert OutgoingMessage.objects.get().status == OutgoingMessage.Status.SENT
    guard.assert_clean()


def test_a_pdf_attachment_opens_as_page_images_in_a_new_tab(page, live_server, alice, gmail_ui):
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    page.click("text=Quarterly report")
    page.wait_for_url("**/thread/*/")
    with page.context.expect_page() as opened:
        page.click(".attachments a.pdf-open")
    preview = opened.value
    preview.wait_for_load_state()
    assert "2 pages" in preview.inner_text(".pdf-preview-head")
    pages = preview.locator("img.pdf-page")
    assert pages.count() == 2
    pages.last.scroll_into_view_if_needed()
    assert wait_for(preview, lambda: pages.evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 1000)"))
    assert (
        preview.locator("a[download]")
        .get_attribute("href")
        .endswith(f"/attachment/{Attachment.objects.get(filename='report.pdf').pk}/")
    )
    screenshot(preview, "pdf-preview")
    preview.close()
    guard.assert_clean()


def test_search_from_the_keyboard(page, live_server, alice, gmail_ui):
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    page.keyboard.press("/")
    page.keyboard.type("kickoff")
    page.keyboard.press("Enter")
    page.wait_for_url("**/search/?q=kickoff")
    rows = page.locator(".thread-row")
    assert rows.count() == 1 and "Project kickoff" in rows.first.inner_text()
    page.fill("#search-input", "figures")
    page.check("input[name=attachment]")
    page.click(".search-bar button[type=submit]")
    page.wait_for_url("**/search/?**")
    assert page.locator(".thread-row").count() == 1 and "Quarterly report" in page.inner_text(".thread-list")
    screenshot(page, "search")
    guard.assert_clean()


def test_bulk_archive_and_keyboard_archive(page, live_server, alice, gmail_ui):
    account, gmail, ids = gmail_ui["account"], gmail_ui["gmail"], gmail_ui["ids"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    for subject in ("Lunch on Friday?", "Weekly digest"):
        page.locator(".thread-row", has_text=subject).locator("input[name=threads]").check()
    with page.expect_navigation():
        page.click(".toolbar button[value=archive]")
    assert "2 messages updated." in page.inner_text(".flash")
    assert page.locator(".thread-row").count() == 2
    for subject in ("Lunch on Friday?", "Weekly digest"):
        assert "INBOX" not in gmail.message(account.email, ids[subject]).label_ids
    # j moves to the first row, e archives it.
    page.keyboard.press("j")
    assert "selected" in page.locator(".thread-row").first.get_attribute("class")
    with page.expect_navigation():
        page.keyboard.press("e")
    assert page.locator(".thread-row").count() == 1
    assert "INBOX" not in gmail.message(account.email, ids["report"]).label_ids
    # The toast offers Undo; z takes the archive back, in Mailhub and at Gmail.
    toast = page.locator(".flash .toast")
    assert toast.is_visible() and "Undo" in toast.inner_text()
    screenshot(page, "undo-toast")
    with page.expect_navigation():
        page.keyboard.press("z")
    assert "Undone: 1 message is back as it was." in page.inner_text(".flash")
    assert page.locator(".thread-row").count() == 2
    assert "INBOX" in gmail.message(account.email, ids["report"]).label_ids
    with page.expect_navigation():
        page.keyboard.press("j")
        page.keyboard.press("e")
    # Enter opens the remaining one.
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url("**/thread/*/")
    assert "Project kickoff" in page.inner_text("h1")
    guard.assert_clean()


def test_reconnect_banner_after_revoked_token(page, live_server, alice, gmail_ui, sandbox_settings):
    account = gmail_ui["account"]
    sandbox_settings.tokens.revoke_user(account.email)
    account.token_expires_at = None  # force a refresh, which the sandbox now refuses
    account.save(update_fields=["token_expires_at"])
    assert sync.account_sync(account_id=account.pk).outcome == "stopped"
    assert MailAccount.objects.get(pk=account.pk).needs_reconnect
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    banner = page.locator(".reconnect")
    assert banner.is_visible()
    assert "lost access" in banner.inner_text()
    assert page.locator(".thread-row").count() == 4  # the mail already synced stays readable
    screenshot(page, "reconnect")
    banner.locator("a", has_text="Reconnect").click()
    page.wait_for_url(f"{live_server.url}/accounts/")
    guard.assert_clean()


def test_phone_width_layout(page, live_server, alice, gmail_ui):
    guard = sign_in(page, live_server, alice)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_server.url + "/")
    assert not page.is_visible("#mail-nav")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "inbox-phone")
    page.click(".nav-toggle")
    assert page.is_visible("#mail-nav")
    page.click("text=Quarterly report")
    page.wait_for_url("**/thread/*/")
    frames_loaded(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "thread-phone")
    guard.assert_clean()


def test_new_mail_appears_without_reload(page, live_server, alice, gmail_ui, settings):
    """Live: the page asks every few seconds whether what it shows changed; the sync's 60 s beat is not waited for."""
    settings.MAILHUB_SYNC_INTERVAL_SECONDS = 60
    settings.MAILHUB_LIVE_SECONDS = 2
    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    assert page.locator(".thread-row").count() == 4
    raw, _ = raw_text_message(
        subject="Fresh news", body="Just arrived", sender="Hal <hal@example.org>", to=account.email
    )
    gmail.insert_message(account.email, raw)
    assert sync.account_sync(account_id=account.pk).outcome == "ok"  # what the worker's beat would do
    stored = time.monotonic()
    page.locator(".thread-row", has_text="Fresh news").wait_for(timeout=5_000)
    assert time.monotonic() - stored < 5
    assert "Fresh news" in page.locator(".thread-row").first.inner_text()
    inbox_count = page.locator(".nav-account .folders a", has_text="Inbox").locator(".count")
    wait_for(page, lambda: inbox_count.inner_text() == "5", timeout=5)  # the sidebar follows too
    guard.assert_clean()


def test_first_sync_progress_reaches_the_open_accounts_page(page, live_server, alice, gmail_ui, settings):
    settings.MAILHUB_LIVE_SECONDS = 1
    account = gmail_ui["account"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/accounts/")
    assert page.locator("progress.sync-progress").count() == 0
    SyncState.objects.filter(account=account).update(
        stage="full", status="running", progress_done=120, progress_total=300
    )
    bar = page.locator("progress.sync-progress")
    bar.wait_for(timeout=5_000)
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("120", "300")
    assert "120 of 300 messages" in page.inner_text("#accounts")
    page.goto(live_server.url + "/")
    SyncState.objects.filter(account=account).update(progress_done=240)
    wait_for(page, lambda: "240 of 300 messages" in page.inner_text("#mail-nav"), timeout=5)
    assert page.locator("#mail-nav progress").get_attribute("value") == "80"
    guard.assert_clean()


def test_simplified_chinese_ui(page, live_server, alice, gmail_ui):
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    page.select_option("#lang-select", "zh-hans")
    page.wait_for_load_state("networkidle")
    assert "所有收件箱" in page.inner_text("h1")
    assert page.is_visible("text=写邮件")
    screenshot(page, "inbox-zh-hans")
    guard.assert_clean()


def test_compose_with_suggestions_and_rich_text(page, live_server, alice, gmail_ui, sends_at_once):
    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/")
    page.keyboard.press("c")
    page.wait_for_url("**/compose/")
    page.locator("input[name=to]").type("dan")
    suggestion = page.locator(".suggestions li", has_text="dana@example.org")
    suggestion.wait_for()
    suggestion.click()
    assert page.input_value("input[name=to]") == "Dana Report <dana@example.org>, "
    page.fill("input[name=subject]", "Rich hello")
    assert page.is_visible("textarea[name=body_text]") and not page.is_visible("textarea[name=body_html]")  # one box
    page.check("input[name=body_format][value=html]")
    editor = page.locator(".prose-editor .ProseMirror")
    assert editor.is_visible() and not page.is_visible("textarea[name=body_text]")
    editor.click()
    page.keyboard.type("Plain then ")
    page.keyboard.press("Control+b")
    page.keyboard.type("Bold words")
    wait_for(page, lambda: "/drafts/" in page.url)  # autosave created the draft and the address bar follows it
    page.click("#send-button")
    page.wait_for_url("**/outbox/")
    mail = message_from_bytes(gmail.sent_messages(account.email)[0].raw, policy=email_policy.default)
    assert mail["To"] == "Dana Report <dana@example.org>"
    sent_html = mail.get_body(("html",)).get_content()
    assert "Bold words</strong>" in sent_html and "<p>Plain then" in sent_html
    assert "Plain then Bold words" in mail.get_body(("plain",)).get_content()
    guard.assert_clean()
