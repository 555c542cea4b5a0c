"""The mail UI views: every page and action, ownership (Bob gets 404), login (anonymous is redirected), CSRF."""

from __future__ import annotations

import io
import json
import os
from email import message_from_bytes
from functools import partial

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import MailAccount
from mailbox import selectors, store
from mailbox.local import account_client
from mailbox.models import (
    Attachment,
    Folder,
    Message,
    MessageFolder,
    OutgoingAttachment,
    OutgoingMessage,
    SyncState,
    Thread,
)
from providers.errors import ErrorCode, ProviderError
from providers.models import ProviderApp
from tests.fixtures.ui import UiMail, message_add, raw_text_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Autouse, so it runs before the persona fixtures hash their passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob):
    c = Client()
    c.force_login(bob)
    return c


@pytest.fixture
def objects(ui_mail: UiMail):
    """One of each row a URL can point at, all Alice's."""
    draft = OutgoingMessage.objects.create(account=ui_mail.alice_gmail, subject="Draft to keep", to=[])
    blob = store.blob_store(content=b"draft attachment")
    draft_file = OutgoingAttachment.objects.create(outgoing=draft, blob=blob, filename="notes.txt", size=16)
    failed = OutgoingMessage.objects.create(
        account=ui_mail.alice_gmail,
        status=OutgoingMessage.Status.FAILED,
        subject="Failed one",
        to=[{"name": "", "email": "x@example.org"}],
        raw=b"Subject: x\r\n\r\nx",
        last_error_code="recipients_refused",
        last_error="x@example.org",
    )
    unknown = OutgoingMessage.objects.create(
        account=ui_mail.alice_gmail,
        status=OutgoingMessage.Status.UNKNOWN,
        subject="Maybe sent",
        to=[{"name": "", "email": "y@example.org"}],
        raw=b"Subject: y\r\n\r\ny",
        handed_off_at=timezone.now(),
        last_error_code="send_uncertain",
        last_error="TimeoutError",
    )
    pdf = ui_mail.html.attachments.get(filename="report.pdf")
    logo = ui_mail.html.attachments.get(content_id="logo@example.org")
    return {
        "folder": ui_mail.folders[ui_mail.alice_gmail.email]["INBOX"].id,
        "thread": ui_mail.html.thread_id,
        "message": ui_mail.html.id,
        "attachment": pdf.id,
        "cid": logo.content_id,
        "draft": draft.id,
        "draft_file": draft_file.id,
        "failed": failed.id,
        "unknown": unknown.id,
        "account": ui_mail.alice_gmail.id,
    }


# (url name, args from `objects`, method, POST data)
OWNED_URLS = [
    ("mailbox:folder", ["folder"], "get", None),
    ("mailbox:thread", ["thread"], "get", None),
    ("mailbox:thread_read", ["thread"], "post", {}),
    ("mailbox:message_body", ["message"], "get", None),
    ("mailbox:message_cid", ["message", "cid"], "get", None),
    ("mailbox:compose_from_message", ["message", "=reply"], "post", {}),
    ("mailbox:compose_from_message", ["message", "=reply_all"], "post", {}),
    ("mailbox:compose_from_message", ["message", "=forward"], "post", {}),
    ("mailbox:attachment", ["attachment"], "get", None),
    ("mailbox:draft", ["draft"], "get", None),
    ("mailbox:draft", ["draft"], "post", {"action": "save", "subject": "hijack"}),
    ("mailbox:draft_delete", ["draft"], "post", {}),
    ("mailbox:outgoing_attachment", ["draft_file"], "get", None),
    ("mailbox:outbox_retry", ["failed"], "post", {}),
    ("mailbox:outbox_check_again", ["unknown"], "post", {}),
    ("mailbox:outbox_send_anyway", ["unknown"], "post", {}),
    ("mailbox:account_sync", ["account"], "post", {}),
    ("mailbox:bulk_action", [], "post", {"action": "archive", "threads": "@thread"}),
]
OPEN_URLS = [
    ("mailbox:inbox", [], "get", None),
    ("mailbox:search", [], "get", None),
    ("mailbox:compose", [], "get", None),
    ("mailbox:compose", [], "post", {"action": "save"}),
    ("mailbox:drafts", [], "get", None),
    ("mailbox:outbox", [], "get", None),
    ("mailbox:suggest", [], "get", None),
    ("mailbox:sidebar", [], "get", None),
]


def _url(objects, name, args):
    return reverse(name, args=[a[1:] if a.startswith("=") else objects[a] for a in args])


def _data(objects, data):
    if not data:
        return data
    return {k: objects[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in data.items()}


@pytest.mark.parametrize(("name", "args", "method", "data"), OWNED_URLS + OPEN_URLS)
def test_anonymous_is_sent_to_login(client, objects, name, args, method, data):
    url = _url(objects, name, args)
    response = getattr(client, method)(url, _data(objects, data) or {})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize(("name", "args", "method", "data"), OWNED_URLS)
def test_other_user_gets_404(bob_client, objects, ui_mail, name, args, method, data):
    before = (
        Message.objects.filter(is_read=True).count(),
        OutgoingMessage.objects.count(),
        MessageFolder.objects.count(),
    )
    response = getattr(bob_client, method)(_url(objects, name, args), _data(objects, data) or {})
    assert response.status_code == 404
    after = (
        Message.objects.filter(is_read=True).count(),
        OutgoingMessage.objects.count(),
        MessageFolder.objects.count(),
    )
    assert before == after
    assert OutgoingMessage.objects.get(pk=objects["draft"]).subject == "Draft to keep"


@pytest.mark.parametrize(("name", "args", "method", "data"), [u for u in OWNED_URLS + OPEN_URLS if u[2] == "post"])
def test_state_changes_need_csrf(alice, objects, name, args, method, data):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    response = strict.post(_url(objects, name, args), _data(objects, data) or {})
    assert response.status_code == 403


def test_gets_do_not_change_state(alice_client, objects):
    with pytest.raises(AssertionError):
        # GET on a POST-only action is refused.
        assert alice_client.get(reverse("mailbox:thread_read", args=[objects["thread"]])).status_code != 405
    assert not Message.objects.get(pk=objects["message"]).is_read


@pytest.mark.parametrize("name", ["mailbox:inbox", "mailbox:search", "mailbox:drafts", "mailbox:outbox"])
def test_bob_sees_none_of_alices_mail(bob_client, objects, name):
    url = reverse(name) + ("?q=quarterly" if name == "mailbox:search" else "")
    body = bob_client.get(url).content.decode()
    for secret in ("Quarterly report", "alice@gmail.example", "Draft to keep", "Failed one", "Lunch on Friday"):
        assert secret not in body
    assert bob_client.get(reverse("mailbox:suggest") + "?q=dana").json() == {"results": []}


# --- Sidebar and lists ----------------------------------------------------------------------------


def test_inbox_lists_threads_of_all_accounts_newest_first(alice_client, ui_mail):
    body = alice_client.get(reverse("mailbox:inbox")).content.decode()
    order = [body.index(s) for s in ("Project kickoff", "Quarterly report", "Lunch on Friday?")]
    assert order == sorted(order)
    assert "Bob&#x27;s private mail" not in body and "Bob's private mail" not in body
    assert 'class="thread-row unread"' in body
    assert 'title="Has attachments"' in body
    assert '<span class="msg-count">2</span>' in body  # the Outlook thread of two messages
    assert "Frank Peer" in body and "Dana Report" in body
    assert 'hx-trigger="every ' in body  # new mail appears by polling


def test_sidebar_shows_accounts_folders_unread_counts_and_sync(alice_client, ui_mail):
    body = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert "alice@gmail.example" in body and "alice@outlook.example" in body
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    label = ui_mail.folders["alice@gmail.example"]["Label_1"]
    assert f'href="/folder/{inbox.id}/"' in body
    assert "Receipts" in body
    sidebar = alice_client.get(reverse("mailbox:sidebar")).content.decode()
    # The Receipts label holds the one unread message (the HTML one); Trash has none.
    segment = sidebar.split(f'/folder/{label.id}/"')[1].split("</li>")[0]
    assert '<span class="count">1</span>' in segment
    trash = ui_mail.folders["alice@gmail.example"]["TRASH"]
    assert 'class="count"' not in sidebar.split(f'/folder/{trash.id}/"')[1].split("</li>")[0]
    assert "Synced" in sidebar
    assert "Reconnect" not in sidebar


def test_reconnect_banner_and_last_error(alice_client, ui_mail):
    ui_mail.alice_outlook.status = MailAccount.Status.REAUTH_REQUIRED
    ui_mail.alice_outlook.status_reason = "access_denied"
    ui_mail.alice_outlook.save()
    SyncState.objects.filter(account=ui_mail.alice_gmail).update(
        status=SyncState.Status.ERROR, last_error_code="throttled", last_error="HTTP 429 userRateLimitExceeded"
    )
    body = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert 'role="alert"' in body and "Reconnect</a>" in body
    assert f'href="{reverse("accounts:list")}"' in body
    assert "Microsoft refused Mailhub access to this mailbox. Reconnect it and allow access." in body
    assert "Google asked Mailhub to slow down; syncing resumes by itself." in body
    assert "userRateLimitExceeded" not in body  # the technical detail is for administrators


def test_first_sync_progress_bar(alice_client, ui_mail):
    SyncState.objects.filter(account=ui_mail.alice_gmail).update(
        stage=SyncState.Stage.FULL, status=SyncState.Status.RUNNING, progress_done=250, progress_total=1000
    )
    body = alice_client.get(reverse("mailbox:sidebar")).content.decode()
    assert '<progress max="100" value="25">' in body
    assert "250 of 1000" in body


def test_folder_view_lists_only_that_folder(alice_client, ui_mail):
    label = ui_mail.folders["alice@gmail.example"]["Label_1"]
    body = alice_client.get(reverse("mailbox:folder", args=[label.id])).content.decode()
    assert "Quarterly report" in body
    assert "Lunch on Friday?" not in body and "Project kickoff" not in body


def test_keyset_pagination_without_offset(alice_client, ui_mail):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    base = timezone.now() - timezone.timedelta(days=10)
    for i in range(57):
        raw, _ = raw_text_message(subject=f"Bulk {i:02d}", body="x", when=base + timezone.timedelta(minutes=i))
        message_add(ui_mail.alice_gmail, raw, folders=[inbox], is_read=True, when=base + timezone.timedelta(minutes=i))
    with CaptureQueriesContext(connection) as queries:
        first = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)
    assert len(queries.captured_queries) < 15
    assert first.count('class="thread-row') == 50
    cursor = first.split("cursor=")[1].split('"')[0]
    second = alice_client.get(reverse("mailbox:inbox") + f"?cursor={cursor}").content.decode()
    assert second.count('class="thread-row') == 60 - 50
    shown = {s for s in first.split('data-thread="')[1:]} | {s for s in second.split('data-thread="')[1:]}
    assert len(shown) == 60
    assert "Bulk 00" in second and "Bulk 56" in first
    assert "cursor=" not in second.split("</form>")[-1]  # no "Older" link on the last page
    assert alice_client.get(reverse("mailbox:inbox") + "?cursor=garbage").status_code == 200
    assert alice_client.get(reverse("mailbox:inbox") + "?before=garbage").status_code == 200


def _rows(body: str) -> list[str]:
    return [part.split('"')[0] for part in body.split('data-thread="')[1:]]


def _link(body: str, rel: str) -> str | None:
    marker = f'rel="{rel}"'
    if marker not in body:
        return None
    anchor = body.split(marker)[0].rsplit("<a ", 1)[1]
    return anchor.split('href="')[1].split('"')[0].replace("&amp;", "&")


def test_paging_back_to_newer_mail_shows_the_same_pages(alice_client, ui_mail):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    base = timezone.now() - timezone.timedelta(days=10)
    for i in range(117):
        when = base + timezone.timedelta(minutes=i // 2)  # pairs share a time: the id breaks the tie
        raw, _ = raw_text_message(subject=f"Bulk {i:03d}", body="x", when=when)
        message_add(ui_mail.alice_gmail, raw, folders=[inbox], is_read=True, when=when)
    url = reverse("mailbox:inbox")
    pages = [alice_client.get(url).content.decode()]
    assert _link(pages[0], "prev") is None
    while (older := _link(pages[-1], "next")) is not None:
        pages.append(alice_client.get(url + older).content.decode())
    assert [len(_rows(p)) for p in pages] == [50, 50, 20]
    back = pages[-1]
    for expected in reversed(pages[:-1]):
        back = alice_client.get(url + _link(back, "prev")).content.decode()
        assert _rows(back) == _rows(expected)
    assert _link(back, "prev") is None  # the newest page again, which polls for new mail
    assert "partial=list" in back


def test_all_inboxes_pages_through_both_mailboxes_in_date_order_and_back(alice_client, ui_mail):
    """Each mailbox is read on its own and the pages merged: no thread is skipped or shown twice, ties included."""
    base = timezone.now() - timezone.timedelta(days=10)
    for i in range(75):
        account = ui_mail.alice_gmail if i % 3 else ui_mail.alice_outlook
        inbox = ui_mail.folders[account.email]["INBOX"]
        when = base + timezone.timedelta(minutes=i // 2)  # pairs share a time, across the two mailboxes too
        raw, _ = raw_text_message(subject=f"Merged {i:03d}", body="x", when=when)
        message_add(account, raw, folders=[inbox], is_read=True, when=when)
    alice = ui_mail.alice_gmail.user
    expected = list(
        selectors.threads_in_folders(user=alice, folders=selectors.inbox_folders(user=alice))
        .filter(last_message_at__isnull=False)
        .order_by("-last_message_at", "-id")
        .values_list("id", flat=True)
    )
    url = reverse("mailbox:inbox")
    pages = [alice_client.get(url).content.decode()]
    while (older := _link(pages[-1], "next")) is not None:
        pages.append(alice_client.get(url + older).content.decode())
    assert [int(row) for page in pages for row in _rows(page)] == expected and len(pages) == 2
    back = alice_client.get(url + _link(pages[-1], "prev")).content.decode()
    assert _rows(back) == _rows(pages[0])


def test_polling_returns_just_the_rows(alice_client, ui_mail):
    response = alice_client.get(reverse("mailbox:inbox") + "?partial=list", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.lstrip().startswith('<ul class="thread-list" id="thread-rows"')
    assert "Quarterly report" in body and "<html" not in body


# --- Thread and message bodies ---------------------------------------------------------------------


def test_thread_view_newest_expanded_attachments_and_inline_image(alice_client, ui_mail):
    first = Message.objects.filter(thread=ui_mail.reply.thread).exclude(pk=ui_mail.reply.pk).get()
    body = alice_client.get(reverse("mailbox:thread", args=[ui_mail.reply.thread_id])).content.decode()
    assert f'id="message-{first.id}" >' in body  # older: collapsed
    assert f'id="message-{ui_mail.reply.id}" open>' in body  # newest: expanded
    assert f'hx-post="{reverse("mailbox:thread_read", args=[ui_mail.reply.thread_id])}" hx-trigger="load"' in body

    body = alice_client.get(reverse("mailbox:thread", args=[ui_mail.html.thread_id])).content.decode()
    pdf = ui_mail.html.attachments.get(filename="report.pdf")
    assert f'href="{reverse("mailbox:attachment", args=[pdf.id])}"' in body
    assert "logo.png" not in body  # the inline image is shown in place, not listed as an attachment
    assert f'src="{reverse("mailbox:message_body", args=[ui_mail.html.id])}"' in body
    assert 'sandbox="allow-same-origin allow-popups allow-popups-to-escape-sandbox"' in body
    assert "Show images" in body


def test_plain_text_is_escaped_and_linkified(alice_client, ui_mail):
    raw, _ = raw_text_message(
        subject="Links", body="<script>alert(1)</script> see https://example.com/a?b=1&c=2\nline2"
    )
    message = message_add(ui_mail.alice_gmail, raw, folders=[ui_mail.folders["alice@gmail.example"]["INBOX"]])
    body = alice_client.get(reverse("mailbox:thread", args=[message.thread_id])).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert '<a target="_blank" rel="noopener noreferrer nofollow" href="https://example.com/a?b=1&amp;c=2">' in body


def test_opening_marks_read_and_queues_write_back(alice_client, ui_mail, django_capture_on_commit_callbacks):
    thread = ui_mail.reply.thread
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(reverse("mailbox:thread_read", args=[thread.id]))
    assert response.status_code == 204
    assert not Message.objects.filter(thread=thread, is_read=False).exists()
    assert Thread.objects.get(pk=thread.id).unread_count == 0
    assert len(callbacks) == 1  # one write-back task for the account


def test_message_body_is_sanitised_under_strict_csp(alice_client, ui_mail):
    response = alice_client.get(reverse("mailbox:message_body", args=[ui_mail.html.id]))
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "form-action 'none'" in csp
    assert "https:" not in csp
    body = response.content.decode()
    cid_url = reverse("mailbox:message_cid", args=[ui_mail.html.id, "logo@example.org"])
    assert f'src="{cid_url}"' in body
    assert "tracker.example.net" not in body
    assert "<table" in body and "Quarterly figures" in body and "<br>" in body
    assert 'style="color: #127a3b"' in body or 'style="color:#127a3b"' in body

    shown = alice_client.get(reverse("mailbox:message_body", args=[ui_mail.html.id]) + "?images=1")
    assert "https://tracker.example.net/pixel.gif" in shown.content.decode()
    assert "https:" in shown["Content-Security-Policy"]


def test_inline_image_and_attachment_downloads(alice_client, ui_mail):
    response = alice_client.get(reverse("mailbox:message_cid", args=[ui_mail.html.id, "logo@example.org"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")

    pdf = ui_mail.html.attachments.get(filename="report.pdf")
    response = alice_client.get(reverse("mailbox:attachment", args=[pdf.id]))
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="report.pdf"' in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"] == "application/octet-stream"
    assert b"".join(response.streaming_content) == b"%PDF-1.4 fake pdf\n"


def test_a_large_attachment_is_downloaded_from_file_storage(alice_client, ui_mail):
    data = os.urandom(store.INLINE_BLOB_MAX + 10)
    big = Attachment.objects.create(
        message=ui_mail.html, blob=store.blob_store(content=data), filename="big.bin", size=len(data)
    )
    assert big.blob.file and big.blob.content is None
    response = alice_client.get(reverse("mailbox:attachment", args=[big.id]))
    assert b"".join(response.streaming_content) == data


def test_html_attachment_is_never_served_inline(alice_client, ui_mail):
    message = ui_mail.html
    blob = store.blob_store(content=b"<script>alert(1)</script>")
    evil = Attachment.objects.create(
        message=message,
        blob=blob,
        filename="x.html",
        content_type="text/html",
        content_id="evil@x",
        is_inline=True,
        size=26,
    )
    assert alice_client.get(reverse("mailbox:message_cid", args=[message.id, "evil@x"])).status_code == 404
    response = alice_client.get(reverse("mailbox:attachment", args=[evil.id]))
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Type"] == "application/octet-stream"


# --- Bulk actions --------------------------------------------------------------------------------


def _bulk(client, action, threads, follow=False, **extra):
    data = {"action": action, "threads": threads, "next": "/", **extra}
    return client.post(reverse("mailbox:bulk_action"), data, follow=follow)


def test_bulk_archive_removes_from_inbox(alice_client, ui_mail, django_capture_on_commit_callbacks):
    threads = [ui_mail.plain.thread_id, ui_mail.reply.thread_id]
    with django_capture_on_commit_callbacks() as callbacks:
        response = _bulk(alice_client, "archive", threads)
    assert response.status_code == 302 and response["Location"] == "/"
    assert len(callbacks) == 2  # a write-back per account
    body = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert "Lunch on Friday?" not in body and "Project kickoff" not in body
    assert "Quarterly report" in body
    assert "3 messages updated." in body


@pytest.mark.parametrize(
    ("action", "check"),
    [
        ("read", lambda m: m.is_read),
        ("unread", lambda m: not m.is_read),
        ("star", lambda m: m.is_starred),
        ("trash", lambda m: m.folders.filter(role="trash").exists() and not m.folders.filter(role="inbox").exists()),
    ],
)
def test_bulk_flags_and_trash(alice_client, ui_mail, action, check):
    _bulk(alice_client, action, [ui_mail.html.thread_id])
    assert check(Message.objects.get(pk=ui_mail.html.pk))


def test_bulk_move_to_label(alice_client, ui_mail):
    label = ui_mail.folders["alice@gmail.example"]["Label_1"]
    _bulk(alice_client, "move", [ui_mail.plain.thread_id], folder=label.id)
    assert list(Message.objects.get(pk=ui_mail.plain.pk).folders.values_list("remote_id", flat=True)) == ["Label_1"]
    response = _bulk(alice_client, "move", [ui_mail.plain.thread_id])  # no folder chosen
    assert response.status_code == 302
    assert Message.objects.get(pk=ui_mail.plain.pk).folders.count() == 1


def test_moving_mail_of_two_mailboxes_says_what_was_not_moved(alice_client, ui_mail):
    label = ui_mail.folders["alice@gmail.example"]["Label_1"]
    outlook_thread = ui_mail.reply.thread_id  # in alice@outlook.example
    response = _bulk(alice_client, "move", [ui_mail.plain.thread_id, outlook_thread], folder=label.id, follow=True)
    page = response.content.decode()
    assert "1 conversation is in another mailbox than alice@gmail.example and was not moved" in page
    assert "1 message updated." in page
    assert list(Message.objects.get(pk=ui_mail.plain.pk).folders.values_list("remote_id", flat=True)) == ["Label_1"]
    assert "Label_1" not in Message.objects.get(pk=ui_mail.reply.pk).folders.values_list("remote_id", flat=True)


def test_a_folder_page_offers_only_its_own_mailbox_folders_to_move_to(alice_client, ui_mail):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    page = alice_client.get(reverse("mailbox:folder", args=[inbox.id])).content.decode()
    move_menu = page.split('name="folder"')[1].split("</select>")[0]
    assert 'label="alice@gmail.example"' in move_menu and "alice@outlook.example" not in move_menu
    everywhere = alice_client.get(reverse("mailbox:inbox")).content.decode().split('name="folder"')[1]
    assert 'label="alice@outlook.example"' in everywhere.split("</select>")[0]


def test_trash_offers_delete_forever_where_the_provider_allows_it_and_says_why_not_on_gmail(
    alice_client, ui_mail, django_capture_on_commit_callbacks
):
    gmail_trash = ui_mail.folders["alice@gmail.example"]["TRASH"]
    outlook_trash = ui_mail.folders["alice@outlook.example"]["TRASH"]
    store.message_folders_change(account=ui_mail.alice_gmail, remote_ids=[ui_mail.plain.remote_id], add=[gmail_trash])
    store.message_folders_change(
        account=ui_mail.alice_outlook, remote_ids=[ui_mail.reply.remote_id], add=[outlook_trash]
    )
    gmail_page = alice_client.get(reverse("mailbox:folder", args=[gmail_trash.id])).content.decode()
    assert "Google deletes messages in Trash for good after 30 days." in gmail_page
    assert 'value="delete_forever"' not in gmail_page and 'value="trash"' not in gmail_page  # Delete did nothing here
    outlook_page = alice_client.get(reverse("mailbox:folder", args=[outlook_trash.id])).content.decode()
    assert 'value="delete_forever"' in outlook_page and "Empty Trash" in outlook_page

    # Asked for both threads: only the Outlook message in Trash goes; Gmail's cannot be deleted for good.
    threads = [ui_mail.plain.thread_id, ui_mail.reply.thread_id]
    with django_capture_on_commit_callbacks() as callbacks:
        response = _bulk(alice_client, "delete_forever", threads, follow=True)
    assert "1 message updated." in response.content.decode()
    write_backs = [c.args for c in callbacks if isinstance(c, partial)]
    assert write_backs == [(ui_mail.alice_outlook.pk, [ui_mail.reply.pk], "delete_forever", "")]  # Outlook only
    assert not Message.objects.get(pk=ui_mail.reply.pk).folders.filter(role="trash").exists()
    assert Message.objects.get(pk=ui_mail.plain.pk).folders.filter(role="trash").exists()


def test_empty_trash_deletes_only_what_is_in_that_trash(alice_client, ui_mail, django_capture_on_commit_callbacks):
    outlook_trash = ui_mail.folders["alice@outlook.example"]["TRASH"]
    store.message_folders_change(
        account=ui_mail.alice_outlook, remote_ids=[ui_mail.reply.remote_id], add=[outlook_trash]
    )
    with django_capture_on_commit_callbacks():
        response = alice_client.post(reverse("mailbox:trash_empty", args=[outlook_trash.id]), follow=True)
    assert "1 message deleted forever." in response.content.decode()
    assert not outlook_trash.messages.exists()
    inbox = ui_mail.folders["alice@outlook.example"]["INBOX"]
    assert alice_client.post(reverse("mailbox:trash_empty", args=[inbox.id])).status_code == 404
    bobs_trash = Folder.objects.get(account=ui_mail.bob_gmail, role="trash")
    assert alice_client.post(reverse("mailbox:trash_empty", args=[bobs_trash.id])).status_code == 404


def test_bulk_ignores_other_users_threads(alice_client, ui_mail):
    response = _bulk(alice_client, "read", [ui_mail.bob_message.thread_id])
    assert response.status_code == 404
    assert not Message.objects.get(pk=ui_mail.bob_message.pk).is_read


def test_bulk_refuses_an_offsite_next(alice_client, ui_mail):
    response = _bulk(alice_client, "read", [ui_mail.html.thread_id], next="https://evil.example/")
    assert response["Location"] == reverse("mailbox:inbox")


# --- Compose, drafts, outbox ---------------------------------------------------------------------


def _compose(client, url, **fields):
    data = {
        "account": fields.pop("account"),
        "to": "",
        "cc": "",
        "bcc": "",
        "subject": "",
        "body_text": "",
        "body_format": "text",
        "action": "save",
        **fields,
    }
    return client.post(url, data)


def test_compose_page_offers_own_accounts_and_states_the_limit(alice_client, ui_mail):
    body = alice_client.get(reverse("mailbox:compose")).content.decode()
    assert "alice@gmail.example" in body and "alice@outlook.example" in body
    assert "bob@gmail.example" not in body
    assert "Up to 25 MB in total." in body
    assert 'enctype="multipart/form-data"' in body


def test_a_provider_turned_off_is_said_beside_its_mailboxes_which_stay_readable_but_cannot_send(alice_client, ui_mail):
    ProviderApp.objects.filter(provider="google").update(enabled=False)
    said = "Your administrator turned Google off in Mail settings: this mailbox does not sync or send"
    inbox = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert said in inbox
    accounts = alice_client.get(reverse("accounts:list")).content.decode()
    assert said in accounts and "Turned off" in accounts
    gmail_inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    assert "Quarterly report" in alice_client.get(reverse("mailbox:folder", args=[gmail_inbox.id])).content.decode()

    from_menu = alice_client.get(reverse("mailbox:compose")).content.decode().split('name="account"')[1]
    from_menu = from_menu.split("</select>")[0]
    assert "alice@outlook.example" in from_menu and "alice@gmail.example" not in from_menu
    refused = _compose(
        alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id, to="bob@example.org", action="send"
    )
    assert refused.status_code == 400
    assert "This mailbox cannot send now: its provider is turned off in Mail settings." in refused.content.decode()
    assert not OutgoingMessage.objects.filter(status=OutgoingMessage.Status.QUEUED).exists()
    with pytest.raises(ProviderError) as stopped:
        account_client(ui_mail.alice_gmail)
    assert stopped.value.code == ErrorCode.PROVIDER_OFF


def test_compose_send_queues_through_outbox(alice_client, ui_mail, django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("plan.txt", b"the plan", content_type="text/plain")
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(
            reverse("mailbox:compose"),
            {
                "account": ui_mail.alice_outlook.id,
                "to": "Carol Jones <carol@example.org>, dan@example.org",
                "cc": "",
                "bcc": "boss@example.org",
                "subject": "Plan",
                "body_text": "Here it is.",
                "body_format": "text",
                "action": "send",
                "files": [upload],
            },
        )
    assert response.status_code == 302 and response["Location"] == reverse("mailbox:outbox")
    sent = OutgoingMessage.objects.get(subject="Plan")
    assert sent.account == ui_mail.alice_outlook
    assert sent.status == OutgoingMessage.Status.QUEUED
    assert sent.to == [{"name": "Carol Jones", "email": "carol@example.org"}, {"name": "", "email": "dan@example.org"}]
    assert sent.bcc == [{"name": "", "email": "boss@example.org"}]
    assert b"plan.txt" in bytes(sent.raw) and b"Here it is." in bytes(sent.raw)
    assert len(callbacks) == 2  # a sync (the draft saved on the way) and the send
    outbox = alice_client.get(reverse("mailbox:outbox")).content.decode()
    assert "Plan" in outbox and "Queued" in outbox


def test_compose_rejects_bad_addresses_and_other_users_account(alice_client, ui_mail):
    response = _compose(
        alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id, to="not an address", action="send"
    )
    assert response.status_code == 400
    assert "is not a valid email address" in response.content.decode()
    response = _compose(alice_client, reverse("mailbox:compose"), account=ui_mail.bob_gmail.id, to="x@example.org")
    assert response.status_code == 400
    response = _compose(alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id, action="send")
    assert response.status_code == 400 and "Add at least one recipient." in response.content.decode()
    assert not OutgoingMessage.objects.exclude(status="draft").exists()


def test_attachments_limited_to_25_mb(alice_client, ui_mail):
    draft = OutgoingMessage.objects.create(account=ui_mail.alice_gmail, subject="Big")
    blob = store.blob_store(content=b"stand-in for a large file")
    OutgoingAttachment.objects.create(outgoing=draft, blob=blob, filename="big.bin", size=25 * 1024 * 1024 - 5)
    upload = SimpleUploadedFile("more.txt", b"0123456789")
    response = alice_client.post(
        reverse("mailbox:draft", args=[draft.id]),
        {
            "account": ui_mail.alice_gmail.id,
            "to": "x@example.org",
            "subject": "Big",
            "body_format": "text",
            "action": "save",
            "files": [upload],
        },
    )
    assert response.status_code == 400
    assert "Attachments may total at most 25 MB." in response.content.decode()
    assert draft.attachments.count() == 1


def test_autosave_creates_then_updates_one_draft(alice_client, ui_mail):
    url = reverse("mailbox:compose")
    first = _compose(alice_client, url, account=ui_mail.alice_gmail.id, subject="Half", action="autosave").json()
    assert first["saved"] is True
    draft = OutgoingMessage.objects.get(pk=first["id"])
    assert first["url"] == reverse("mailbox:draft", args=[draft.id])
    second = _compose(
        alice_client,
        first["url"],
        account=ui_mail.alice_gmail.id,
        subject="Half done",
        body_text="more",
        action="autosave",
    ).json()
    assert second["id"] == draft.id
    draft.refresh_from_db()
    assert (draft.subject, draft.body_text, draft.status) == ("Half done", "more", "draft")
    assert OutgoingMessage.objects.filter(status="draft").count() == 1
    # The draft can be resumed from the drafts list.
    assert first["url"] in alice_client.get(reverse("mailbox:drafts")).content.decode()
    page = alice_client.get(first["url"]).content.decode()
    assert 'value="Half done"' in page and "more</textarea>" in page


def test_rich_text_body_is_sanitised(alice_client, ui_mail):
    url = reverse("mailbox:compose")
    result = _compose(
        alice_client,
        url,
        account=ui_mail.alice_gmail.id,
        body_format="html",
        action="autosave",
        body_html='<p onclick="x()">Hi <b>there</b><script>alert(1)</script></p>',
    ).json()
    draft = OutgoingMessage.objects.get(pk=result["id"])
    assert draft.body_html == "<p>Hi <b>there</b></p>"
    assert draft.body_text == "Hi there"


def test_reply_reply_all_and_forward(alice_client, ui_mail):
    source = Message.objects.get(pk=ui_mail.html.pk)
    source.cc = [{"name": "Gil", "email": "gil@example.org"}, {"name": "Me", "email": "alice@gmail.example"}]
    source.save()
    response = alice_client.post(reverse("mailbox:compose_from_message", args=[source.id, "reply"]))
    reply = OutgoingMessage.objects.latest("id")
    assert response["Location"] == reverse("mailbox:draft", args=[reply.id])
    assert reply.kind == "reply" and reply.account == ui_mail.alice_gmail
    assert reply.to == [{"name": "Dana Report", "email": "dana@example.org"}] and reply.cc == []
    assert reply.subject == "Re: Quarterly report"
    assert reply.in_reply_to == source.message_id
    assert reply.references.endswith(f"<{source.message_id}>")
    assert "> Quarterly figures: 42" in reply.body_text

    alice_client.post(reverse("mailbox:compose_from_message", args=[source.id, "reply_all"]))
    reply_all = OutgoingMessage.objects.latest("id")
    assert [p["email"] for p in reply_all.cc] == ["gil@example.org"]  # not herself

    alice_client.post(reverse("mailbox:compose_from_message", args=[source.id, "forward"]))
    forward = OutgoingMessage.objects.latest("id")
    assert forward.subject == "Fwd: Quarterly report" and forward.to == []
    assert sorted(forward.attachments.values_list("filename", flat=True)) == ["logo.png", "report.pdf"]
    page = alice_client.get(reverse("mailbox:draft", args=[forward.id])).content.decode()
    assert "report.pdf" in page

    assert alice_client.post(reverse("mailbox:compose_from_message", args=[source.id, "bogus"])).status_code == 404


def test_reply_send_builds_threading_headers(alice_client, ui_mail):
    alice_client.post(reverse("mailbox:compose_from_message", args=[ui_mail.reply.id, "reply"]))
    draft = OutgoingMessage.objects.latest("id")
    alice_client.post(
        reverse("mailbox:draft", args=[draft.id]),
        {
            "account": draft.account_id,
            "to": "frank@example.org",
            "subject": draft.subject,
            "body_text": "Thanks",
            "body_format": "text",
            "action": "send",
        },
    )
    draft.refresh_from_db()
    sent = message_from_bytes(bytes(draft.raw))
    assert draft.status == "queued"
    assert sent["In-Reply-To"] == f"<{ui_mail.reply.message_id}>"
    assert sent["References"].split()[-1] == f"<{ui_mail.reply.message_id}>"
    assert len(sent["References"].split()) == 2  # the thread's root, then the message replied to


def test_draft_remove_attachment_and_discard(alice_client, objects, ui_mail):
    url = reverse("mailbox:draft", args=[objects["draft"]])
    response = alice_client.post(
        url,
        {
            "account": ui_mail.alice_gmail.id,
            "subject": "Draft to keep",
            "body_format": "text",
            "remove_attachment": objects["draft_file"],
        },
    )
    assert response.status_code == 302
    assert not OutgoingAttachment.objects.filter(pk=objects["draft_file"]).exists()
    alice_client.post(reverse("mailbox:draft_delete", args=[objects["draft"]]))
    assert not OutgoingMessage.objects.filter(pk=objects["draft"]).exists()


def test_queued_message_is_no_longer_editable(alice_client, objects):
    OutgoingMessage.objects.filter(pk=objects["draft"]).update(status="queued")
    assert alice_client.get(reverse("mailbox:draft", args=[objects["draft"]])).status_code == 404


def test_outbox_shows_failure_and_retry_requeues(alice_client, objects, django_capture_on_commit_callbacks):
    page = alice_client.get(reverse("mailbox:outbox")).content.decode()
    assert "Failed one" in page and ">Retry</button>" in page
    # The user's words come from the code; the provider's own answer (the refused address) is quoted.
    assert "Google refused these recipients, so nothing was sent: x@example.org" in page
    assert "may or may not have gone out" in page and "TimeoutError" not in page
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(reverse("mailbox:outbox_retry", args=[objects["failed"]]))
    assert response.status_code == 302
    assert OutgoingMessage.objects.get(pk=objects["failed"]).status == "queued"
    assert len(callbacks) == 1
    # Only a failed message can be retried.
    assert alice_client.post(reverse("mailbox:outbox_retry", args=[objects["failed"]])).status_code == 404


def test_unknown_message_offers_check_again_and_send_anyway(alice_client, objects, django_capture_on_commit_callbacks):
    page = alice_client.get(reverse("mailbox:outbox")).content.decode()
    assert "Maybe sent" in page and "it may or may not have gone out." in page
    assert ">Check again</button>" in page and ">Send anyway</button>" in page
    sidebar = alice_client.get(reverse("mailbox:sidebar")).content.decode()
    assert 'title="Needs your attention">2<' in sidebar  # the failed and the unknown message
    with django_capture_on_commit_callbacks() as callbacks:
        alice_client.post(reverse("mailbox:outbox_check_again", args=[objects["unknown"]]))
    row = OutgoingMessage.objects.get(pk=objects["unknown"])
    assert row.status == "queued" and row.handed_off_at is not None and len(callbacks) == 1  # asks first
    OutgoingMessage.objects.filter(pk=row.pk).update(status="unknown")
    with django_capture_on_commit_callbacks() as callbacks:
        alice_client.post(reverse("mailbox:outbox_send_anyway", args=[objects["unknown"]]))
    row.refresh_from_db()
    assert row.status == "queued" and row.handed_off_at is None and len(callbacks) == 1  # sends without asking
    # Only an unknown message has these buttons.
    assert alice_client.post(reverse("mailbox:outbox_send_anyway", args=[row.pk])).status_code == 404


def test_sync_now_queues_a_sync(alice_client, ui_mail, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(reverse("mailbox:account_sync", args=[ui_mail.alice_gmail.id]), {"next": "/"})
    assert response.status_code == 302
    assert len(callbacks) == 1


def test_address_suggestions_from_past_correspondents(alice_client, ui_mail):
    results = alice_client.get(reverse("mailbox:suggest") + "?q=da").json()["results"]
    assert results == [{"name": "Dana Report", "email": "dana@example.org"}]
    results = alice_client.get(reverse("mailbox:suggest") + "?q=Fra").json()["results"]
    assert [r["email"] for r in results] == ["frank@example.org"]
    assert alice_client.get(reverse("mailbox:suggest") + "?q=").json() == {"results": []}


def test_autosave_errors_are_json(alice_client, ui_mail):
    response = _compose(
        alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id, subject="a\nb", action="autosave"
    )
    assert response.status_code == 400
    assert json.loads(response.content)["saved"] is False


@pytest.mark.parametrize("action", ["autosave", "save"])
def test_a_draft_with_an_unfinished_address_is_saved_and_only_sending_refuses_it(alice_client, ui_mail, action):
    """Typing "grace" into To must not stop the draft from being saved (it was silently lost before)."""
    url = reverse("mailbox:compose")
    response = _compose(
        alice_client, url, account=ui_mail.alice_gmail.id, to="bob@example.org, grace", body_text="Hi", action=action
    )
    assert response.status_code in {200, 302}
    draft = OutgoingMessage.objects.get(account=ui_mail.alice_gmail, body_text="Hi")
    assert [p["email"] for p in draft.to] == ["bob@example.org", "grace"]
    reopened = alice_client.get(reverse("mailbox:draft", args=[draft.id])).content.decode()
    assert 'value="bob@example.org, grace"' in reopened

    sent = _compose(
        alice_client,
        reverse("mailbox:draft", args=[draft.id]),
        account=ui_mail.alice_gmail.id,
        to="bob@example.org, grace",
        body_text="Hi",
        action="send",
    )
    assert sent.status_code == 400
    assert "“grace” is not a valid email address." in sent.content.decode()
    draft.refresh_from_db()
    assert draft.status == OutgoingMessage.Status.DRAFT


def test_simplified_chinese_catalogue(alice_client, ui_mail, settings):
    alice_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    body = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert '<html lang="zh-hans">' in body
    for text in ("所有收件箱", "写邮件", "归档", "收件箱", "搜索邮件"):
        assert text in body
    page = alice_client.get(reverse("mailbox:compose")).content.decode()
    assert "总大小不超过 25 MB。" in page and "发送" in page


def test_user_without_accounts_is_pointed_at_connecting_one(client, charlie):
    client.force_login(charlie)
    body = client.get(reverse("mailbox:inbox")).content.decode()
    assert "No mail accounts yet." in body and f'href="{reverse("accounts:list")}"' in body
    assert "No conversations here." in body
    response = client.get(reverse("mailbox:compose"))
    assert response.status_code == 302 and response["Location"] == reverse("accounts:list")


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        (
            "a@x.org, bad@example, @example; nope",
            "These are not valid email addresses: “bad@example”, “@example”, “nope”.",
        ),
        ("grace", "“grace” is not a valid email address."),
        ("x@y.org, z@", "“z@” is not a valid email address."),  # not dropped silently
    ],
)
def test_every_bad_recipient_is_named_as_typed(typed, error):
    from django.core.exceptions import ValidationError

    from mailbox.forms import addresses_parse

    with pytest.raises(ValidationError) as raised:
        addresses_parse(typed)
    assert raised.value.messages == [error]


def test_good_recipients_parse_with_names_quotes_and_separators():
    from mailbox.forms import addresses_parse

    assert addresses_parse('"Lee, Ann" <ann@x.org>; b@c.org, , ') == [
        {"name": "Lee, Ann", "email": "ann@x.org"},
        {"name": "", "email": "b@c.org"},
    ]
    assert addresses_parse("  ") == []


def test_a_thread_in_trash_offers_delete_forever_instead_of_delete(alice_client, ui_mail):
    outlook_trash = ui_mail.folders["alice@outlook.example"]["TRASH"]
    thread = ui_mail.thread(ui_mail.reply)
    remote_ids = list(thread.messages.values_list("remote_id", flat=True))
    page = alice_client.get(reverse("mailbox:thread", args=[thread.id])).content.decode()
    assert 'value="trash"' in page and 'value="delete_forever"' not in page
    store.message_folders_change(account=ui_mail.alice_outlook, remote_ids=remote_ids, add=[outlook_trash])
    page = alice_client.get(reverse("mailbox:thread", args=[thread.id])).content.decode()
    assert 'value="trash"' not in page and 'value="delete_forever"' in page


# --- Live updates ----------------------------------------------------------------------------------


def _version(client) -> str:
    page = client.get(reverse("mailbox:inbox")).content.decode()
    return page.split(reverse("mailbox:changes") + "?v=")[1].split('"')[0]


def _changed(client, version: str) -> bool:
    response = client.get(reverse("mailbox:changes"), {"v": version})
    assert response.status_code in {200, 204}
    if response.status_code == 200:
        assert response["HX-Trigger"] == "mail-changed"
        assert f"?v={version}" not in response.content.decode()  # the watcher carries the new version
    return response.status_code == 200


def test_an_open_page_learns_of_each_change_it_shows_and_of_nothing_else(alice_client, ui_mail):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    version = _version(alice_client)
    assert not _changed(alice_client, version)
    changes = [
        lambda: message_add(
            ui_mail.alice_gmail, raw_text_message(subject="New", body="x")[0], folders=[inbox], is_read=True
        ),
        lambda: store.message_flags_update(
            account=ui_mail.alice_gmail, remote_ids=[ui_mail.plain.remote_id], is_read=False
        ),
        lambda: SyncState.objects.filter(account=ui_mail.alice_outlook).update(progress_done=7, progress_total=9),
        lambda: SyncState.objects.filter(account=ui_mail.alice_outlook).update(
            status="error", last_error_code="throttled"
        ),
        lambda: MailAccount.objects.filter(pk=ui_mail.alice_gmail.pk).update(status="reauth_required"),
        lambda: OutgoingMessage.objects.create(account=ui_mail.alice_gmail, status="draft"),
        lambda: ProviderApp.objects.filter(provider="microsoft").update(enabled=False),
    ]
    for change in changes:
        change()
        assert _changed(alice_client, version)
        version = _version(alice_client)
        assert not _changed(alice_client, version)
    # Another user's mail is not this page's business.
    message_add(ui_mail.bob_gmail, raw_text_message(subject="Bob's", body="x")[0], folders=[], is_read=False)
    assert not _changed(alice_client, version)


def test_asking_for_changes_costs_the_same_few_queries_however_much_mail(alice_client, ui_mail):
    version = _version(alice_client)
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    with CaptureQueriesContext(connection) as few:
        alice_client.get(reverse("mailbox:changes"), {"v": version})
    for i in range(30):
        message_add(ui_mail.alice_gmail, raw_text_message(subject=f"n{i}", body="x")[0], folders=[inbox])
    version = _version(alice_client)
    with CaptureQueriesContext(connection) as more:
        assert alice_client.get(reverse("mailbox:changes"), {"v": version}).status_code == 204
    assert len(more.captured_queries) == len(few.captured_queries) <= 6


# --- Undo ------------------------------------------------------------------------------------------


def _undo(client):
    return client.post(reverse("mailbox:undo"), {"next": "/"}, follow=True).content.decode()


@pytest.mark.parametrize("action", ["archive", "trash", "read", "unread", "star", "unstar"])
def test_undo_puts_back_exactly_what_the_action_changed(alice_client, ui_mail, action):
    """Only the messages the action really changed go back: one already read stays read after undoing "unread"."""
    threads = [ui_mail.plain.thread_id, ui_mail.html.thread_id, ui_mail.reply.thread_id]
    ids = list(Message.objects.filter(thread_id__in=threads).values_list("pk", flat=True))
    Message.objects.filter(pk=ui_mail.html.pk).update(is_starred=True)

    def state():
        rows = Message.objects.filter(pk__in=ids).order_by("pk")
        return [(m.is_read, m.is_starred, sorted(m.folders.values_list("role", flat=True))) for m in rows]

    before = state()
    page = _bulk(alice_client, action, threads, follow=True).content.decode()
    assert state() != before
    assert 'id="undo-button"' in page and 'data-key="z"' in page
    page = _undo(alice_client)
    assert state() == before
    assert "Undone:" in page
    assert "There is nothing to undo." in _undo(alice_client)  # once only


def test_no_undo_is_offered_for_what_cannot_be_taken_back(alice_client, ui_mail):
    trash = ui_mail.folders["alice@outlook.example"]["TRASH"]
    store.message_folders_change(account=ui_mail.alice_outlook, remote_ids=[ui_mail.reply.remote_id], add=[trash])
    page = _bulk(alice_client, "delete_forever", [ui_mail.reply.thread_id], follow=True).content.decode()
    assert 'id="undo-button"' not in page
    assert "There is nothing to undo." in _undo(alice_client)


def test_undo_of_a_move_puts_the_mail_back_where_the_list_showed_it(
    alice_client, ui_mail, django_capture_on_commit_callbacks
):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    label = ui_mail.folders["alice@gmail.example"]["Label_1"]

    def folders():
        return set(Message.objects.get(pk=ui_mail.plain.pk).folders.values_list("remote_id", flat=True))

    assert folders() == {"INBOX"}
    page = _bulk(
        alice_client, "move", [ui_mail.plain.thread_id], folder=label.id, from_folder=inbox.id, follow=True
    ).content.decode()
    assert folders() == {"Label_1"} and 'id="undo-button"' in page
    with django_capture_on_commit_callbacks() as callbacks:
        _undo(alice_client)
    assert folders() == {"INBOX"}  # back in the inbox, and the label taken off again (Gmail labels)
    write_backs = [c.args[2:] for c in callbacks if isinstance(c, partial)]
    assert write_backs == [("move", "INBOX"), ("remove_label", "Label_1")]


def test_undo_touches_only_the_users_own_messages(alice_client, ui_mail, client, bob):
    _bulk(alice_client, "read", [ui_mail.html.thread_id])
    client.force_login(bob)
    assert "There is nothing to undo." in _undo(client)  # the plan lives in Alice's session only
    assert Message.objects.get(pk=ui_mail.html.pk).is_read


def test_a_rows_star_button_stars_and_unstars_that_row_alone(alice_client, ui_mail):
    page = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert f'name="star_thread" value="{ui_mail.plain.thread_id}"' in page
    # Other rows ticked in the list are left alone: the star is the row's own.
    alice_client.post(
        reverse("mailbox:bulk_action"),
        {"star_thread": ui_mail.plain.thread_id, "threads": [ui_mail.html.thread_id], "next": "/"},
    )
    assert Message.objects.get(pk=ui_mail.plain.pk).is_starred
    assert not Message.objects.get(pk=ui_mail.html.pk).is_starred
    page = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert f'name="unstar_thread" value="{ui_mail.plain.thread_id}"' in page
    alice_client.post(reverse("mailbox:bulk_action"), {"unstar_thread": ui_mail.plain.thread_id, "next": "/"})
    assert not Message.objects.get(pk=ui_mail.plain.pk).is_starred


def test_sent_shows_recipients_and_all_inboxes_shows_each_rows_mailbox(alice_client, ui_mail):
    sent = ui_mail.folders["alice@gmail.example"]["SENT"]
    raw, _ = raw_text_message(subject="Our offer", body="x", sender="alice@gmail.example", to="Zoe Buyer <zoe@ex.org>")
    message_add(ui_mail.alice_gmail, raw, folders=[sent], is_read=True)
    row = alice_client.get(reverse("mailbox:folder", args=[sent.id])).content.decode().split('class="thread-row')[1]
    assert "To: Zoe Buyer" in row and "alice@gmail.example" not in row.split('class="subject-line')[0]
    everything = alice_client.get(reverse("mailbox:inbox")).content.decode()
    assert 'class="account-tag" title="alice@outlook.example"' in everything
    assert 'class="account-tag" title="alice@gmail.example"' in everything
    one_folder = alice_client.get(reverse("mailbox:folder", args=[sent.id])).content.decode()
    assert 'class="account-tag"' not in one_folder


def test_gmail_all_mail_lists_archived_mail_but_not_trash_or_spam(alice_client, ui_mail):
    gmail, g = ui_mail.alice_gmail, ui_mail.folders["alice@gmail.example"]
    message_add(gmail, raw_text_message(subject="Archived thing", body="x")[0], folders=[], is_read=True)
    message_add(gmail, raw_text_message(subject="Binned thing", body="x")[0], folders=[g["TRASH"]])
    message_add(gmail, raw_text_message(subject="Spammy thing", body="x")[0], folders=[g["SPAM"]])
    inbox = alice_client.get(reverse("mailbox:inbox")).content.decode()
    url = reverse("mailbox:all_mail", args=[gmail.id])
    assert f'href="{url}"' in inbox  # offered for Gmail
    assert reverse("mailbox:all_mail", args=[ui_mail.alice_outlook.id]) not in inbox  # Outlook has its own folders
    page = alice_client.get(url).content.decode()
    assert "Archived thing" in page and "Quarterly report" in page and "Lunch on Friday?" in page
    assert "Binned thing" not in page and "Spammy thing" not in page
    assert "Project kickoff" not in page  # Outlook's mail is not Gmail's All mail
    assert alice_client.get(reverse("mailbox:all_mail", args=[ui_mail.bob_gmail.id])).status_code == 404


def test_search_results_say_how_many_and_mark_the_words_found(alice_client, ui_mail):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    raw, _ = raw_text_message(subject="<b>Quarterly</b> & friends", body="quarterly numbers")
    message_add(ui_mail.alice_gmail, raw, folders=[inbox])
    page = alice_client.get(reverse("mailbox:search"), {"q": "quarter -lunch"}).content.decode()
    assert "2 conversations<" in page
    assert "<mark>Quarter</mark>ly report" in page
    assert "&lt;b&gt;<mark>Quarter</mark>ly&lt;/b&gt; &amp; friends" in page  # escaped, never markup
    assert "<mark>lunch" not in page.lower()  # an excluded word is not marked
    one = alice_client.get(reverse("mailbox:search"), {"q": "kickoff"}).content.decode()
    assert "1 conversation<" in one


def test_a_search_with_more_than_a_page_says_what_this_page_shows(alice_client, ui_mail):
    inbox = ui_mail.folders["alice@gmail.example"]["INBOX"]
    for i in range(52):
        message_add(ui_mail.alice_gmail, raw_text_message(subject=f"Bulk invoice {i}", body="x")[0], folders=[inbox])
    page = alice_client.get(reverse("mailbox:search"), {"q": "invoice"}).content.decode()
    assert "50 conversations on this page" in page
    older = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = alice_client.get(reverse("mailbox:search") + older).content.decode()
    assert "2 conversations on this page" in second


def test_the_highlight_filter_marks_word_starts_only_and_escapes():
    from mailbox.templatetags.mailbox_tags import highlight

    assert highlight("Report reports preport", ["report"]) == "<mark>Report</mark> <mark>report</mark>s preport"
    assert highlight("a<b>", []) == "a&lt;b&gt;"
    assert highlight("x <script>", ["x"]) == "<mark>x</mark> &lt;script&gt;"


def test_an_image_attachment_is_previewed_inline_and_nothing_else_is(alice_client, ui_mail, client, bob):
    from tests.fixtures.ui import png_bytes

    message = ui_mail.html
    photo = Attachment.objects.create(
        message=message, blob=store.blob_store(content=png_bytes()), filename="photo.png", content_type="image/png"
    )
    svg = Attachment.objects.create(
        message=message,
        blob=store.blob_store(content=b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        filename="logo.svg",
        content_type="image/svg+xml",
    )
    page = alice_client.get(reverse("mailbox:thread", args=[message.thread_id])).content.decode()
    preview = reverse("mailbox:attachment_preview", args=[photo.id])
    assert f'<img src="{preview}"' in page
    assert reverse("mailbox:attachment_preview", args=[svg.id]) not in page  # the PDF and SVG only download
    shown = alice_client.get(preview)
    assert shown.status_code == 200 and shown["Content-Type"] == "image/png"
    assert not shown["Content-Disposition"].startswith("attachment")
    assert shown["X-Content-Type-Options"] == "nosniff" and "sandbox" in shown["Content-Security-Policy"]
    assert b"".join(shown.streaming_content) == png_bytes()
    assert alice_client.get(reverse("mailbox:attachment_preview", args=[svg.id])).status_code == 404
    client.force_login(bob)
    assert client.get(preview).status_code == 404


def _pdf_attachment(message: Message, content: bytes, **fields) -> Attachment:
    fields = {"filename": "report.pdf", "content_type": "application/pdf", **fields}
    blob = store.blob_store(content=content)
    return Attachment.objects.create(message=message, blob=blob, size=len(content), **fields)


def _png_colour(png: bytes) -> tuple[int, ...]:
    """The colour in the middle of the image, to the nearest 16 (the PDF stores pages as JPEG)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    return tuple(round(c / 16) * 16 for c in image.convert("RGB").getpixel((image.width // 2, image.height // 2)))


def test_a_pdf_is_previewed_as_its_pages_rendered_to_images(alice_client, ui_mail, client, bob):
    from tests.fixtures.ui import pdf_bytes

    report = _pdf_attachment(ui_mail.html, pdf_bytes("red", "blue"))
    thread = alice_client.get(reverse("mailbox:thread", args=[ui_mail.html.thread_id])).content.decode()
    preview = reverse("mailbox:attachment_preview", args=[report.id])
    assert f'class="pdf-open" href="{preview}"' in thread

    page = alice_client.get(preview).content.decode()
    assert "2 pages" in page and "report.pdf" in page
    first, second = (reverse("mailbox:attachment_pdf_page", args=[report.id, n]) for n in (1, 2))
    assert f'src="{first}"' in page and f'src="{second}"' in page and 'alt="Page 2 of 2"' in page
    assert reverse("mailbox:attachment_pdf_page", args=[report.id, 3]) not in page

    shown = alice_client.get(second)
    assert shown.status_code == 200 and shown["Content-Type"] == "image/png"
    assert shown["X-Content-Type-Options"] == "nosniff" and "sandbox" in shown["Content-Security-Policy"]
    assert _png_colour(shown.content) == (0, 0, 256)
    assert _png_colour(alice_client.get(first).content) == (256, 0, 0)
    assert alice_client.get(reverse("mailbox:attachment_pdf_page", args=[report.id, 3])).status_code == 404

    client.force_login(bob)
    assert client.get(preview).status_code == 404
    assert client.get(second).status_code == 404


def test_a_pdf_sent_as_octet_stream_is_previewed_but_other_files_are_not(alice_client, ui_mail):
    from tests.fixtures.ui import pdf_bytes

    labelled_loosely = _pdf_attachment(ui_mail.html, pdf_bytes("green"), content_type="application/octet-stream")
    shown = alice_client.get(reverse("mailbox:attachment_preview", args=[labelled_loosely.id]))
    assert "1 page" in shown.content.decode()
    zipped = _pdf_attachment(ui_mail.html, b"PK\x03\x04", filename="report.zip", content_type="application/zip")
    assert alice_client.get(reverse("mailbox:attachment_preview", args=[zipped.id])).status_code == 404
    assert alice_client.get(reverse("mailbox:attachment_pdf_page", args=[zipped.id, 1])).status_code == 404


def test_a_damaged_pdf_says_to_download_it_instead(alice_client, ui_mail):
    from tests.fixtures.ui import pdf_bytes

    damaged = _pdf_attachment(ui_mail.html, pdf_bytes("red")[:300])
    page = alice_client.get(reverse("mailbox:attachment_preview", args=[damaged.id]))
    assert page.status_code == 200
    assert "This PDF cannot be previewed" in page.content.decode()
    assert reverse("mailbox:attachment", args=[damaged.id]) in page.content.decode()
    assert alice_client.get(reverse("mailbox:attachment_pdf_page", args=[damaged.id, 1])).status_code == 404


def test_a_long_pdf_shows_its_first_pages_and_says_so(alice_client, ui_mail):
    from mailbox.pdfpreview import PAGES_SHOWN
    from tests.fixtures.ui import pdf_bytes

    long_report = _pdf_attachment(ui_mail.html, pdf_bytes(*["white"] * (PAGES_SHOWN + 2)))
    page = alice_client.get(reverse("mailbox:attachment_preview", args=[long_report.id])).content.decode()
    assert page.count('class="pdf-page"') == PAGES_SHOWN
    assert f"first {PAGES_SHOWN} pages of {PAGES_SHOWN + 2}" in page
    past_shown = reverse("mailbox:attachment_pdf_page", args=[long_report.id, PAGES_SHOWN + 1])
    assert alice_client.get(past_shown).status_code == 404
