"""The sandbox Gmail API over real HTTP, driven by the unmodified google-api-python-client."""

from __future__ import annotations

import base64
import email
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaInMemoryUpload

from sandbox.corpus import awkward_corpus
from sandbox.gmail.api import ROUTES
from sandbox.gmail.discovery import response_schema, schema_errors
from sandbox.gmail.store import GmailStore

ALICE = "alice@gmail.com"
MESSAGE_FIELDS = {"id", "threadId", "labelIds", "snippet", "sizeEstimate", "historyId", "internalDate"}


def mail(
    subject: str = "Hello",
    *,
    when: datetime | None = None,
    msgid: str | None = None,
    reply_to: str | None = None,
    attachment: bool = False,
    to: str = ALICE,
) -> bytes:
    message = EmailMessage()
    message["From"] = "Bob Example <bob@example.org>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(when or datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    message["Message-ID"] = msgid or email.utils.make_msgid(domain="example.org")
    if reply_to:
        message["In-Reply-To"] = reply_to
        message["References"] = reply_to
    message.set_content(f"Body of {subject}")
    if attachment:
        message.add_alternative(f"<p>Body of <b>{subject}</b><img src='cid:logo@x'></p>", subtype="html")
        message.get_payload()[1].add_related(b"\x89PNG....", "image", "png", cid="<logo@x>")
        message.add_attachment(b"%PDF-1.4 report", maintype="application", subtype="pdf", filename="Résumé.pdf")
    return message.as_bytes()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def valid(method: str, response: dict) -> dict:
    errors = schema_errors(response, response_schema(method))
    assert not errors, f"{method}: {errors}"
    return response


def raw_get(url: str, token: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - loopback
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def http_error(exc: pytest.ExceptionInfo[HttpError]) -> tuple[int, dict]:
    return exc.value.resp.status, json.loads(exc.value.content)["error"]


FULL_ACCESS = ("https://mail.google.com/",)  # messages.delete and batchDelete need it; gmail.modify cannot


@pytest.fixture
def alice(gmail_api):
    return gmail_api.service(ALICE, scopes=FULL_ACCESS)


def test_profile_and_labels(gmail_api, alice):
    gmail_api.store.insert_message(ALICE, mail())
    profile = valid("getProfile", alice.users().getProfile(userId="me").execute())
    assert profile["emailAddress"] == ALICE and profile["messagesTotal"] == 1 and profile["threadsTotal"] == 1
    assert profile["historyId"] == str(gmail_api.store.history_id(ALICE))

    created = valid(
        "labels.create",
        alice.users()
        .labels()
        .create(
            userId="me",
            body={"name": "Projects/Mailhub", "labelListVisibility": "labelShow", "messageListVisibility": "show"},
        )
        .execute(),
    )
    assert created["id"].startswith("Label_") and created["type"] == "user"
    labels = valid("labels.list", alice.users().labels().list(userId="me").execute())["labels"]
    ids = {label["id"] for label in labels}
    assert {
        "INBOX",
        "SENT",
        "DRAFT",
        "TRASH",
        "SPAM",
        "STARRED",
        "IMPORTANT",
        "UNREAD",
        "CATEGORY_SOCIAL",
        created["id"],
    } <= ids
    inbox = valid("labels.get", alice.users().labels().get(userId="me", id="INBOX").execute())
    assert inbox["messagesTotal"] == 1 and inbox["messagesUnread"] == 1
    with pytest.raises(HttpError) as exc:
        alice.users().labels().create(userId="me", body={"name": "projects/mailhub"}).execute()
    assert http_error(exc)[0] == 409
    assert alice.users().labels().delete(userId="me", id=created["id"]).execute() == ""


def test_messages_list_pages_newest_first_and_filters(gmail_api, alice):
    store = gmail_api.store
    ids = [
        store.insert_message(ALICE, mail(f"m{day}", when=datetime(2024, 3, day, 12, tzinfo=UTC)))
        for day in range(1, 26)
    ]
    store.trash(ALICE, ids[0])
    store.modify(ALICE, ids[1], add=["SPAM"], remove=["INBOX"])

    seen, token, pages = [], None, 0
    while True:
        page = valid(
            "messages.list", alice.users().messages().list(userId="me", maxResults=10, pageToken=token).execute()
        )
        seen += [m["id"] for m in page["messages"]]
        assert page["resultSizeEstimate"] == 23
        pages += 1
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and seen == list(reversed(ids[2:]))  # newest first, spam and trash left out

    def listed(**kwargs) -> list[str]:
        return [m["id"] for m in alice.users().messages().list(userId="me", **kwargs).execute().get("messages", [])]

    march_10 = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())
    assert set(listed(q=f"after:{march_10}")) == set(ids[9:])
    assert set(listed(q=f"after:{march_10} before:{march_10 + 86400 * 2}")) == set(ids[9:11])
    assert set(listed(q="after:2024/03/20")) == set(ids[19:])  # Pacific midnight, still before noon UTC
    assert listed(q="in:trash") == [ids[0]]
    assert listed(labelIds=["SPAM"]) == [ids[1]]
    assert len(listed(includeSpamTrash=True, maxResults=500)) == 25
    assert len(listed(q="in:anywhere", maxResults=500)) == 25
    assert listed(q="subject:m7") == [ids[6]]
    assert listed(q="-in:inbox", includeSpamTrash=True) == [ids[1], ids[0]]
    label = store.create_label(ALICE, "Work Stuff")
    store.modify(ALICE, ids[5], add=[label])
    assert listed(q="label:work-stuff") == [ids[5]] == listed(labelIds=[label])
    assert listed(q="is:unread from:bob@example.org", maxResults=1) == [ids[-1]]
    with pytest.raises(HttpError) as exc:
        alice.users().messages().list(userId="me", labelIds=["Label_404"]).execute()
    assert http_error(exc)[0] == 400
    empty = alice.users().messages().list(userId="me", q="from:nobody").execute()
    assert empty == {"resultSizeEstimate": 0}


def test_messages_get_in_every_format(gmail_api, alice):
    raw = mail("Formats", attachment=True)
    msg_id = gmail_api.store.insert_message(ALICE, raw, label_ids=["INBOX"])

    raw_format = valid("messages.get", alice.users().messages().get(userId="me", id=msg_id, format="raw").execute())
    assert base64.urlsafe_b64decode(raw_format["raw"]) == raw
    assert set(raw_format) == MESSAGE_FIELDS | {"raw"} and raw_format["labelIds"] == ["INBOX"]
    assert raw_format["snippet"] == "Body of Formats" and raw_format["sizeEstimate"] == len(raw)
    assert raw_format["internalDate"] == str(int(datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp() * 1000))

    minimal = valid("messages.get", alice.users().messages().get(userId="me", id=msg_id, format="minimal").execute())
    assert set(minimal) == MESSAGE_FIELDS

    full = valid("messages.get", alice.users().messages().get(userId="me", id=msg_id).execute())
    payload = full["payload"]
    assert payload["mimeType"] == "multipart/mixed" and payload["partId"] == ""
    assert {"name": "Subject", "value": "Formats"} in payload["headers"]
    alternative, attachment = payload["parts"]
    plain = alternative["parts"][0]
    assert plain["partId"] == "0.0" and base64.urlsafe_b64decode(plain["body"]["data"]) == b"Body of Formats\n"
    related = alternative["parts"][1]
    image = related["parts"][1]
    assert image["mimeType"] == "image/png" and "attachmentId" in image["body"]
    assert attachment["filename"] == "Résumé.pdf" and attachment["body"]["size"] == len(b"%PDF-1.4 report")

    body = valid(
        "messages.attachments.get",
        alice.users()
        .messages()
        .attachments()
        .get(userId="me", messageId=msg_id, id=attachment["body"]["attachmentId"])
        .execute(),
    )
    assert base64.urlsafe_b64decode(body["data"]) == b"%PDF-1.4 report" and body["size"] == 15

    metadata = valid(
        "messages.get",
        alice.users()
        .messages()
        .get(userId="me", id=msg_id, format="metadata", metadataHeaders=["Subject", "From"])
        .execute(),
    )
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["From", "Subject"]
    assert "parts" not in metadata["payload"]

    partial = alice.users().messages().get(userId="me", id=msg_id, fields="id,payload(mimeType)").execute()
    assert partial == {"id": msg_id, "payload": {"mimeType": "multipart/mixed"}}
    with pytest.raises(HttpError) as exc:
        alice.users().messages().get(userId="me", id="0000000000000000").execute()
    status, error = http_error(exc)
    assert status == 404 and error["errors"][0]["reason"] == "notFound" and error["status"] == "NOT_FOUND"


def test_label_changes_trash_delete_and_history(gmail_api, alice):
    store = gmail_api.store
    first = store.insert_message(ALICE, mail("one"))
    second = store.insert_message(ALICE, mail("two"))
    start = store.history_id(ALICE)

    modified = valid(
        "messages.modify",
        alice.users()
        .messages()
        .modify(userId="me", id=first, body={"addLabelIds": ["STARRED"], "removeLabelIds": ["UNREAD"]})
        .execute(),
    )
    assert modified == {"id": first, "threadId": first, "labelIds": ["INBOX", "STARRED"]}
    assert (
        alice.users()
        .messages()
        .batchModify(userId="me", body={"ids": [first, second], "removeLabelIds": ["INBOX"]})
        .execute()
        == ""
    )
    trashed = valid("messages.trash", alice.users().messages().trash(userId="me", id=second).execute())
    assert trashed["labelIds"] == ["TRASH", "UNREAD"]
    untrashed = valid("messages.untrash", alice.users().messages().untrash(userId="me", id=second).execute())
    assert untrashed["labelIds"] == ["UNREAD"]
    assert alice.users().messages().delete(userId="me", id=first).execute() == ""
    third = store.insert_message(ALICE, mail("three"))
    with pytest.raises(HttpError) as exc:
        alice.users().messages().modify(userId="me", id=second, body={"addLabelIds": ["Label_9"]}).execute()
    assert http_error(exc)[0] == 400

    history = valid("history.list", alice.users().history().list(userId="me", startHistoryId=start).execute())
    assert history["historyId"] == str(store.history_id(ALICE))
    changes = [
        (key, item["message"]["id"], tuple(item.get("labelIds", ())))
        for entry in history["history"]
        for key in entry
        if key not in ("id", "messages")
        for item in entry[key]
    ]
    assert changes == [
        ("labelsAdded", first, ("STARRED",)),
        ("labelsRemoved", first, ("UNREAD",)),
        ("labelsRemoved", first, ("INBOX",)),
        ("labelsRemoved", second, ("INBOX",)),
        ("labelsAdded", second, ("TRASH",)),
        ("labelsRemoved", second, ("TRASH",)),
        ("messagesDeleted", first, ()),
        ("messagesAdded", third, ()),
    ]
    ids = [int(entry["id"]) for entry in history["history"]]
    assert ids == sorted(ids) and ids[0] > start

    added = alice.users().history().list(userId="me", startHistoryId=start, historyTypes=["messageAdded"]).execute()
    assert [e["messagesAdded"][0]["message"]["id"] for e in added["history"]] == [third]
    assert added["history"][0]["messagesAdded"][0]["message"]["labelIds"] == ["INBOX", "UNREAD"]
    trash = alice.users().history().list(userId="me", startHistoryId=start, labelId="TRASH").execute()
    assert len(trash["history"]) == 2

    pages, token, collected = 0, None, []
    while True:
        page = alice.users().history().list(userId="me", startHistoryId=start, maxResults=3, pageToken=token).execute()
        collected += page["history"]
        pages += 1
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and collected == history["history"]

    now = store.history_id(ALICE)
    assert alice.users().history().list(userId="me", startHistoryId=now).execute() == {"historyId": str(now)}
    store.expire_history(ALICE)
    with pytest.raises(HttpError) as exc:
        alice.users().history().list(userId="me", startHistoryId=start).execute()
    status, error = http_error(exc)
    assert status == 404 and error["errors"][0]["reason"] == "notFound"
    assert alice.users().history().list(userId="me", startHistoryId=now).execute() == {"historyId": str(now)}


def test_history_retention_expires_old_ids(gmail_api):
    store = gmail_api.store
    store.history_retention = 5
    start = store.history_id(ALICE) if store.has_user(ALICE) else None
    msg_id = store.insert_message(ALICE, mail())
    start = start or store.history_id(ALICE) - 1
    for _ in range(3):
        store.modify(ALICE, msg_id, add=["STARRED"])
        store.modify(ALICE, msg_id, remove=["STARRED"])
    service = gmail_api.service(ALICE)
    with pytest.raises(HttpError) as exc:
        service.users().history().list(userId="me", startHistoryId=start).execute()
    assert exc.value.resp.status == 404
    recent = service.users().history().list(userId="me", startHistoryId=store.history_id(ALICE) - 5).execute()
    assert len(recent["history"]) == 5


def test_send_threads_and_keeps_what_was_posted(gmail_api, alice):
    store = gmail_api.store
    original = store.insert_message(ALICE, mail("Question", msgid="<q1@example.org>"))
    reply = EmailMessage()
    reply["From"] = ALICE
    reply["To"] = "bob@example.org"
    reply["Subject"] = "Re: Question"
    reply["In-Reply-To"] = reply["References"] = "<q1@example.org>"
    reply.set_content("Answer")
    sent = valid(
        "messages.send",
        alice.users().messages().send(userId="me", body={"raw": b64(reply.as_bytes()), "threadId": original}).execute(),
    )
    assert sent["threadId"] == original and sent["labelIds"] == ["SENT"]
    record = store.sent_messages(ALICE)[0]
    assert record.raw == reply.as_bytes() and record.thread_id == original and record.requested_thread_id == original
    stored = email.message_from_bytes(store.message(ALICE, sent["id"]).raw, policy=default_policy)
    assert stored["Message-ID"].endswith("@mail.gmail.com>") and stored["Date"]  # added like Gmail does

    # Without threadId, References still join the thread; an upload (multipart and resumable) works too.
    media = MediaInMemoryUpload(reply.as_bytes(), mimetype="message/rfc822")
    uploaded = alice.users().messages().send(userId="me", body={}, media_body=media).execute()
    assert uploaded["threadId"] == original
    resumable = MediaInMemoryUpload(mail("To myself", to=ALICE), mimetype="message/rfc822", resumable=True)
    to_self = alice.users().messages().send(userId="me", media_body=resumable).execute()
    assert to_self["labelIds"] == ["INBOX", "SENT", "UNREAD"]
    assert len(store.sent_messages(ALICE)) == 3

    thread = valid("threads.get", alice.users().threads().get(userId="me", id=original).execute())
    assert [m["id"] for m in thread["messages"]] == [original, sent["id"], uploaded["id"]]
    minimal = alice.users().threads().get(userId="me", id=original, format="minimal").execute()
    assert all("payload" not in m for m in minimal["messages"])
    threads = valid("threads.list", alice.users().threads().list(userId="me", includeSpamTrash=True).execute())
    assert [t["id"] for t in threads["threads"]] == [to_self["threadId"], original]
    first = alice.users().threads().list(userId="me", maxResults=1).execute()
    second = alice.users().threads().list(userId="me", maxResults=1, pageToken=first["nextPageToken"]).execute()
    assert [first["threads"][0]["id"], second["threads"][0]["id"]] == [to_self["threadId"], original]
    assert "nextPageToken" not in second  # a thread is listed once, not again for its older messages

    no_recipient = EmailMessage()
    no_recipient["Subject"] = "x"
    no_recipient.set_content("x")
    with pytest.raises(HttpError) as exc:
        alice.users().messages().send(userId="me", body={"raw": b64(no_recipient.as_bytes())}).execute()
    assert http_error(exc)[0] == 400


def test_send_as_lists_the_aliases_and_a_from_gmail_refuses_is_replaced_by_the_account(gmail_api, alice):
    store = gmail_api.store
    store.display_name_set(ALICE, "Alice Martin")
    store.send_as_add(ALICE, "Sales@Example.org", display_name="Alice (Sales)", default=True)
    store.send_as_add(ALICE, "pending@example.org", verified=False)
    listed = valid("settings.sendAs.list", alice.users().settings().sendAs().list(userId="me").execute())["sendAs"]
    assert [(a["sendAsEmail"], a["displayName"], a["isDefault"], a.get("verificationStatus")) for a in listed] == [
        (ALICE, "Alice Martin", False, None),
        ("Sales@Example.org", "Alice (Sales)", True, "accepted"),
        ("pending@example.org", "", False, "pending"),
    ]
    got = alice.users().settings().sendAs().get(userId="me", sendAsEmail="sales@example.org").execute()
    assert valid("settings.sendAs.get", got)["displayName"] == "Alice (Sales)"
    with pytest.raises(HttpError) as missing:
        alice.users().settings().sendAs().get(userId="me", sendAsEmail="nobody@example.org").execute()
    assert missing.value.resp.status == 404

    def sent_from(address: str) -> str:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = f"Someone <{address}>", "bob@example.org", "Hi"
        message.set_content("x")
        sent = alice.users().messages().send(userId="me", body={"raw": b64(message.as_bytes())}).execute()
        return email.message_from_bytes(store.message(ALICE, sent["id"]).raw, policy=default_policy)["From"]

    assert sent_from("sales@example.org") == "Someone <sales@example.org>"
    assert sent_from(ALICE) == f"Someone <{ALICE}>"
    assert sent_from("pending@example.org") == ALICE  # not verified: Gmail sends as the account, silently
    assert sent_from("stranger@example.org") == ALICE


def test_insert_and_import(gmail_api, alice):
    inserted = valid(
        "messages.insert",
        alice.users()
        .messages()
        .insert(userId="me", body={"raw": b64(mail("Inserted")), "labelIds": ["INBOX"]})
        .execute(),
    )
    assert inserted["labelIds"] == ["INBOX"]
    imported = valid(
        "messages.import", alice.users().messages().import_(userId="me", body={"raw": b64(mail("Imported"))}).execute()
    )
    assert imported["labelIds"] == ["INBOX", "UNREAD"]
    assert gmail_api.store.message(ALICE, imported["id"]).internal_date == int(
        datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp() * 1000
    )


def test_batch_matches_content_ids_like_google(gmail_api, alice):
    ids = gmail_api.store.seed(ALICE, [mail(f"b{n}") for n in range(60)], labels=lambda i, raw: ["INBOX"])
    results: dict[str, tuple[dict | None, Exception | None]] = {}
    batch = alice.new_batch_http_request(callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)))
    for msg_id in ids:
        batch.add(alice.users().messages().get(userId="me", id=msg_id, format="raw"), request_id=msg_id)
    batch.add(alice.users().messages().get(userId="me", id="ffffffffffffffff"), request_id="missing")
    batch.add(
        alice.users().messages().modify(userId="me", id=ids[0], body={"addLabelIds": ["STARRED"]}), request_id="modify"
    )
    batch.execute()
    for msg_id in ids:
        response, error = results[msg_id]
        assert error is None and response["id"] == msg_id
        assert base64.urlsafe_b64decode(response["raw"]) == gmail_api.store.message(ALICE, msg_id).raw
    assert isinstance(results["missing"][1], HttpError) and results["missing"][1].resp.status == 404
    assert results["modify"][0]["labelIds"] == ["INBOX", "STARRED"]
    stats = gmail_api.store.stats(ALICE)
    assert stats["batch"] == 1 and stats["messages.get"] == 61 and stats["messages.modify"] == 1

    # The raw multipart answer: one application/http part per request, Content-ID <response-...>.
    token = gmail_api.token(ALICE)
    body = (
        b"--xyz\r\nContent-Type: application/http\r\nContent-ID: <item1>\r\n\r\n"
        b"GET /gmail/v1/users/me/profile\r\n\r\n--xyz--\r\n"
    )
    request = urllib.request.Request(  # noqa: S310
        f"{gmail_api.url}/batch/gmail/v1",
        data=body,
        method="POST",
        headers={
            "Content-Type": "multipart/mixed; boundary=xyz",
            "Authorization": f"Bearer {token}",
        },
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as response:
        answer = email.message_from_bytes(
            f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode() + response.read()
        )
    part = answer.get_payload()[0]
    assert part["Content-ID"] == "<response-item1>" and part.get_content_type() == "application/http"
    assert part.get_payload().startswith("HTTP/1.1 200 OK")

    too_many = alice.new_batch_http_request()
    for _ in range(101):
        too_many.add(alice.users().getProfile(userId="me"))
    with pytest.raises(HttpError) as exc:
        too_many.execute()
    assert exc.value.resp.status == 400


def test_quota_charges_google_costs_per_batch_part(gmail_api, alice):
    store = gmail_api.store
    msg_id = store.insert_message(ALICE, mail())
    store.quota_enabled = True
    outcome: list[tuple[str, int | None]] = []

    def record(rid, response, exc):
        outcome.append((rid, exc.resp.status if exc else None))
        if exc:
            error = json.loads(exc.content)["error"]
            assert error["errors"][0]["reason"] == "rateLimitExceeded" and error["status"] == "RESOURCE_EXHAUSTED"
            assert error["errors"][0]["domain"] == "usageLimits"
            assert int(exc.resp["retry-after"]) >= 1

    # 2 sends (100 each) + 25 history.list (2 each) = 250 units: all pass; the next call is over.
    batch = alice.new_batch_http_request(callback=record)
    for n in range(2):
        batch.add(alice.users().messages().send(userId="me", body={"raw": b64(mail(f"s{n}", to="x@y.z"))}))
    for _ in range(25):
        batch.add(alice.users().history().list(userId="me", startHistoryId=store.history_id(ALICE)))
    batch.add(alice.users().getProfile(userId="me"))
    batch.execute()
    assert [status for _, status in outcome] == [None] * 27 + [429]
    assert store.stats(ALICE)["throttled"] == 1 and store.stats(ALICE)["units"] == 250

    time.sleep(1.05)  # the window moves on
    outcome.clear()
    batch = alice.new_batch_http_request(callback=record)
    for _ in range(51):
        batch.add(alice.users().messages().get(userId="me", id=msg_id, format="minimal"))
    batch.execute()
    assert [status for _, status in outcome] == [None] * 50 + [429]  # messages.get costs 5

    store.quota_enabled = False
    assert alice.users().getProfile(userId="me").execute()["emailAddress"] == ALICE


def test_failure_injection_and_auth_errors(gmail_api, alice):
    store = gmail_api.store
    store.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(HttpError) as exc:
            alice.users().getProfile(userId="me").execute()
        status, error = http_error(exc)
        assert status == 503 and error["errors"][0]["reason"] == "backendError" and error["status"] == "UNAVAILABLE"
    assert alice.users().getProfile(userId="me").execute()

    store.fail_next(1, status=429, retry_after=3, method="messages.list")
    alice.users().getProfile(userId="me").execute()  # not the targeted method
    with pytest.raises(HttpError) as exc:
        alice.users().messages().list(userId="me").execute()
    assert exc.value.resp.status == 429 and exc.value.resp["retry-after"] == "3"
    store.fail_next(1, status=403)
    with pytest.raises(HttpError) as exc:
        alice.users().messages().list(userId="me").execute()
    assert http_error(exc)[1]["errors"][0]["reason"] == "rateLimitExceeded"
    store.fail_next(1, status=500)
    with pytest.raises(HttpError) as exc:
        alice.users().messages().list(userId="me").execute()
    assert http_error(exc)[1]["status"] == "INTERNAL"

    store.fail_rate(1.0, status=500)
    with pytest.raises(HttpError):
        alice.users().messages().list(userId="me").execute()
    store.fail_rate(0.5, seed=1)
    failures = 0
    for _ in range(40):
        try:
            alice.users().getProfile(userId="me").execute()
        except HttpError as error:
            assert error.resp.status == 503
            failures += 1
    assert 5 < failures < 35
    store.fail_rate(0)
    assert store.stats(ALICE)["injected_failures"] == 6 + failures

    token = gmail_api.token(ALICE)
    gmail_api.tokens.revoke_user(ALICE)
    status, headers, body = raw_get(f"{gmail_api.url}/gmail/v1/users/me/profile", token)
    error = json.loads(body)["error"]
    assert status == 401 and error["status"] == "UNAUTHENTICATED" and error["errors"][0]["reason"] == "authError"
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    with pytest.raises(RefreshError):  # google-auth sees the 401 and, holding no refresh token, gives up
        alice.users().getProfile(userId="me").execute()
    assert store.stats()["unauthorized"] == 2

    expired = gmail_api.token(ALICE)
    gmail_api.tokens.expire_access_tokens(ALICE)
    assert raw_get(f"{gmail_api.url}/gmail/v1/users/me/profile", expired)[0] == 401

    read_only = gmail_api.service(ALICE, scopes=("https://www.googleapis.com/auth/gmail.readonly",))
    assert read_only.users().messages().list(userId="me").execute()
    with pytest.raises(HttpError) as exc:
        read_only.users().messages().send(userId="me", body={"raw": b64(mail())}).execute()
    assert http_error(exc)[1]["errors"][0]["reason"] == "insufficientPermissions"

    bob = gmail_api.service("bob@gmail.com")
    with pytest.raises(HttpError) as exc:
        bob.users().getProfile(userId=ALICE).execute()
    assert exc.value.resp.status == 403
    assert bob.users().getProfile(userId="bob@gmail.com").execute()["messagesTotal"] == 0

    store.disable_mail("nomail@gmail.com")
    no_mail = gmail_api.tokens.issue(
        kind="access",
        provider="google",
        client_id="x",
        email="nomail@gmail.com",
        scopes=("https://mail.google.com/",),
        lifetime=60,
    )
    from tests.fixtures.gmail_api import gmail_service

    with pytest.raises(HttpError) as exc:
        gmail_service(gmail_api.url, no_mail.value).users().getProfile(userId="me").execute()
    status, error = http_error(exc)
    assert status == 400 and error["status"] == "FAILED_PRECONDITION"


def test_every_method_answers_within_its_discovery_schema(gmail_api, alice):
    """Each implemented method is called once and its answer validated (a new route must join this list)."""
    store = gmail_api.store
    store.send_as_add(ALICE, "alias@example.org", display_name="Alice at work")
    msg_id = store.insert_message(ALICE, mail("Schema", attachment=True))
    other = store.insert_message(ALICE, mail("Other"))
    full = alice.users().messages().get(userId="me", id=msg_id).execute()
    attachment_id = full["payload"]["parts"][1]["body"]["attachmentId"]
    users, messages = alice.users(), alice.users().messages()
    label = users.labels().create(userId="me", body={"name": "Schema"}).execute()["id"]
    drafts = users.drafts()
    draft = drafts.create(userId="me", body={"message": {"raw": b64(mail("Draft", to="x@y.z"))}}).execute()["id"]
    to_send = drafts.create(userId="me", body={"message": {"raw": b64(mail("Go", to="x@y.z"))}}).execute()["id"]
    calls = {
        "getProfile": users.getProfile(userId="me"),
        "labels.list": users.labels().list(userId="me"),
        "labels.create": users.labels().create(userId="me", body={"name": "Another"}),
        "labels.get": users.labels().get(userId="me", id=label),
        "labels.patch": users.labels().patch(userId="me", id=label, body={"name": "Schema 2"}),
        "labels.delete": users.labels().delete(userId="me", id=label),
        "messages.list": messages.list(userId="me", q="after:2000/01/01"),
        "messages.get": messages.get(userId="me", id=msg_id),
        "messages.modify": messages.modify(userId="me", id=msg_id, body={"addLabelIds": ["STARRED"]}),
        "messages.batchModify": messages.batchModify(userId="me", body={"ids": [msg_id], "addLabelIds": ["INBOX"]}),
        "messages.trash": messages.trash(userId="me", id=other),
        "messages.untrash": messages.untrash(userId="me", id=other),
        "messages.send": messages.send(userId="me", body={"raw": b64(mail("Sent", to="x@y.z"))}),
        "messages.insert": messages.insert(userId="me", body={"raw": b64(mail("Ins"))}),
        "messages.import": messages.import_(userId="me", body={"raw": b64(mail("Imp"))}),
        "messages.attachments.get": messages.attachments().get(userId="me", messageId=msg_id, id=attachment_id),
        "threads.get": users.threads().get(userId="me", id=msg_id),
        "threads.list": users.threads().list(userId="me"),
        "history.list": users.history().list(userId="me", startHistoryId=store.history_id(ALICE)),
        "messages.delete": messages.delete(userId="me", id=other),
        "messages.batchDelete": messages.batchDelete(userId="me", body={"ids": [msg_id]}),
        "settings.sendAs.list": users.settings().sendAs().list(userId="me"),
        "settings.sendAs.get": users.settings().sendAs().get(userId="me", sendAsEmail=ALICE),
        "drafts.create": drafts.create(userId="me", body={"message": {"raw": b64(mail("Third"))}}),
        "drafts.list": drafts.list(userId="me"),
        "drafts.get": drafts.get(userId="me", id=draft, format="raw"),
        "drafts.update": drafts.update(userId="me", id=draft, body={"message": {"raw": b64(mail("Draft 2"))}}),
        "drafts.send": drafts.send(userId="me", body={"id": to_send}),
        "drafts.delete": drafts.delete(userId="me", id=draft),
    }
    assert set(calls) == {method for _, _, method, _ in ROUTES}
    for method, request in calls.items():
        response = request.execute()
        schema = response_schema(method)
        if schema is None:
            assert response == "", method  # 204 No Content
        else:
            valid(method, response)
    for fmt in ("raw", "minimal", "metadata"):
        valid("messages.get", messages.get(userId="me", id=store.insert_message(ALICE, mail()), format=fmt).execute())
    # Error bodies keep Google's shape too.
    with pytest.raises(HttpError) as exc:
        messages.get(userId="me", id="missing").execute()
    error = json.loads(exc.value.content)
    assert set(error) == {"error"} and set(error["error"]) == {"code", "message", "errors", "status"}


def test_awkward_messages_are_served_in_every_format(gmail_api, alice):
    store = gmail_api.store
    for name, raw in awkward_corpus():
        msg_id = store.insert_message(ALICE, raw)
        got = alice.users().messages().get(userId="me", id=msg_id, format="raw").execute()
        assert base64.urlsafe_b64decode(got["raw"]) == raw, name
        for fmt in ("full", "metadata", "minimal"):
            valid("messages.get", alice.users().messages().get(userId="me", id=msg_id, format=fmt).execute())
        full = alice.users().messages().get(userId="me", id=msg_id).execute()
        parts = [full["payload"]]
        while parts:
            part = parts.pop()
            parts += part.get("parts", [])
            if "attachmentId" in part["body"]:
                data = (
                    alice.users()
                    .messages()
                    .attachments()
                    .get(userId="me", messageId=msg_id, id=part["body"]["attachmentId"])
                    .execute()
                )
                assert data["size"] == part["body"]["size"], name
    duplicates = alice.users().messages().list(userId="me", q="rfc822msgid:duplicate@corpus.example").execute()
    assert len(duplicates["messages"]) == 2


def test_threading_by_references_and_snapshot_round_trip(gmail_api, tmp_path):
    store = gmail_api.store
    root = store.insert_message(ALICE, mail("Topic", msgid="<t1@x>"))
    child = store.insert_message(ALICE, mail("Re: Topic", msgid="<t2@x>", reply_to="<t1@x>"))
    grandchild = store.insert_message(ALICE, mail("Re: Topic", msgid="<t3@x>", reply_to="<t2@x>"))
    unrelated = store.insert_message(ALICE, mail("Topic"))  # same subject, no references: its own thread
    forced = store.insert_message(ALICE, mail("Elsewhere"), thread_id=root)
    assert store.threads(ALICE) == {root: [root, child, grandchild, forced], unrelated: [unrelated]}
    label = store.create_label(ALICE, "Keep")
    store.modify(ALICE, child, add=[label])

    path = tmp_path / "gmail.json.gz"
    store.save(path)
    restored = GmailStore()
    restored.load(path)
    assert restored.threads(ALICE) == store.threads(ALICE)
    assert [(m.id, m.raw, m.label_ids) for m in restored.messages(ALICE)] == [
        (m.id, m.raw, m.label_ids) for m in store.messages(ALICE)
    ]
    assert restored.create_label(ALICE, "Next") == "Label_2"


def test_fast_header_reader_agrees_with_the_full_parser():
    """The store reads facts (threading ids, search text, snippet) with a light reader for speed;
    it must agree with the stdlib parser on every generated and awkward message."""
    from sandbox.corpus import generate_messages
    from sandbox.gmail import mime

    raws = [*generate_messages(400, to_address=ALICE, seed=5), *(raw for _, raw in awkward_corpus())]
    light = 0
    for raw in raws:
        assert mime.facts_of(raw) == mime._facts(mime.parse(raw))
        try:
            mime.LightPart(raw)
            light += 1
        except Exception:  # noqa: BLE001, S112 - the full parser takes these
            continue
    assert light > len(raws) * 0.9


def test_reset_returns_the_store_to_its_defaults(gmail_api):
    store = gmail_api.store
    store.insert_message(ALICE, mail())
    gmail_api.service(ALICE).users().labels().list(userId="me").execute()
    store.quota_enabled = True
    store.fail_next(5)
    store.fail_rate(0.5)
    store.reset()
    assert store.users() == [] and store.stats() == {} and not store.quota_enabled
    assert gmail_api.service(ALICE).users().getProfile(userId="me").execute()["messagesTotal"] == 0


def test_concurrency_limit_counts_each_batch_part(gmail_api, alice):
    store = gmail_api.store
    msg_id = store.insert_message(ALICE, mail())
    store.concurrent_limit = 10
    outcome: list[int | None] = []
    batch = alice.new_batch_http_request(callback=lambda rid, resp, exc: outcome.append(exc and exc.resp.status))
    for _ in range(15):
        batch.add(alice.users().messages().get(userId="me", id=msg_id, format="minimal"))
    batch.execute()
    assert outcome == [None] * 10 + [429] * 5
    assert alice.users().getProfile(userId="me").execute()  # slots are released after each request
    assert store.stats(ALICE)["throttled"] == 5
