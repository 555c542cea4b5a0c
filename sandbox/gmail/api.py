"""The Gmail API methods over :class:`GmailStore`: each handler returns (HTTP status, JSON or None).

Handlers run with ``store.lock`` held and receive the caller's live :class:`Mailbox`.
"""

from __future__ import annotations

import bisect
import email.utils
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sandbox.gmail.mime import b64url, b64url_decode, find_part, parse_attachment_id, payload_full, payload_metadata
from sandbox.gmail.query import QueryError, parse_query
from sandbox.gmail.store import GmailError, GmailStore, Mailbox, StoredMessage, invalid, not_found

Json = dict[str, Any]
Result = tuple[int, Json | None]


@dataclass
class ApiRequest:
    http_method: str
    path: str  # relative to /gmail/v1/users/{userId}/
    params: dict[str, list[str]]
    body: bytes = b""
    content_type: str = "application/json"
    media: bytes | None = None  # an uploaded message (upload endpoints)

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.param(name) or "false").lower() == "true"

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.param(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError as exc:
            raise invalid(f"Invalid value for {name}: {value}") from exc
        return max(low, min(high, number))

    def json(self) -> Json:
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise GmailError(400, "Invalid JSON payload received.", reason="parseError") from exc
        if not isinstance(data, dict):
            raise GmailError(400, "Invalid JSON payload received.", reason="parseError")
        return data


# --- representations -------------------------------------------------------------------------------
def message_json(message: StoredMessage, fmt: str = "full", headers: list[str] | None = None) -> Json:
    out: Json = {"id": message.id, "threadId": message.thread_id}
    if message.label_ids:
        out["labelIds"] = sorted(message.label_ids)
    if fmt == "labels":  # what modify/trash/send answer
        return out
    out["snippet"] = message.facts.snippet
    out["sizeEstimate"] = len(message.raw)
    out["historyId"] = str(message.history_id)
    out["internalDate"] = str(message.internal_date)
    if fmt == "raw":
        out["raw"] = b64url(message.raw)
    elif fmt == "full":
        out["payload"] = payload_full(message.raw, message_id=message.id)
    elif fmt == "metadata":
        out["payload"] = payload_metadata(message.raw, headers=headers)
    return out


def _format(request: ApiRequest) -> str:
    fmt = request.param("format", "full") or "full"
    if fmt not in ("minimal", "full", "raw", "metadata"):
        raise invalid(f"Invalid value at 'format' ({fmt})")
    return fmt


def _token(key: tuple) -> str:
    return b64url(json.dumps(list(key)).encode()).rstrip("=")


def _untoken(value: str | None) -> tuple | None:
    if not value:
        return None
    try:
        return tuple(json.loads(b64url_decode(value)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("Invalid pageToken") from exc


def _matcher(box: Mailbox, request: ApiRequest) -> Callable[[StoredMessage], bool]:
    label_ids = request.params.get("labelIds", [])
    for label_id in label_ids:
        if label_id not in box.labels:
            raise invalid(f"Invalid label: {label_id}")
    try:
        query = parse_query(request.param("q") or "", box.label_names())
    except QueryError as exc:
        raise invalid(f"Invalid query: {exc}") from exc
    hide = not (request.flag("includeSpamTrash") or query.mentions_spam_trash or {"SPAM", "TRASH"} & set(label_ids))

    def matches(message: StoredMessage) -> bool:
        labels = message.label_ids
        if hide and ("SPAM" in labels or "TRASH" in labels):
            return False
        return all(label_id in labels for label_id in label_ids) and query.matches(message)

    return matches


def _scan(box: Mailbox, request: ApiRequest, limit: int, *, threads: bool = False):
    """Walk messages newest first from the page token; returns (matches, next page token, matcher).

    With ``threads``, a thread is listed once, where its newest matching message is."""
    matches = _matcher(box, request)
    after = _untoken(request.param("pageToken"))
    start = bisect.bisect_right(box.order, after) if after else 0
    found: list[StoredMessage] = []
    for index in range(start, len(box.order)):
        message = box.messages[box.order[index][-1]]
        if not matches(message) or (threads and not _newest_match(box, message, matches)):
            continue
        if len(found) == limit:
            return found, _token(box.order[index - 1]) if index else None, matches
        found.append(message)
    return found, None, matches


def _newest_match(box: Mailbox, message: StoredMessage, matches: Callable[[StoredMessage], bool]) -> bool:
    return not any(
        box.messages[other].order_key < message.order_key and matches(box.messages[other])
        for other in box.threads[message.thread_id]
    )


# --- handlers --------------------------------------------------------------------------------------
def get_profile(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    return 200, {
        "emailAddress": box.email,
        "messagesTotal": len(box.messages),
        "threadsTotal": len(box.threads),
        "historyId": str(box.history_id),
    }


def labels_list(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    return 200, {"labels": [dict(label) for label in box.labels.values()]}


def labels_get(store: GmailStore, box: Mailbox, request: ApiRequest, label_id: str) -> Result:
    label = box.labels.get(label_id)
    if label is None:
        raise not_found()
    carrying = [m for m in box.messages.values() if label_id in m.label_ids]
    unread = [m for m in carrying if "UNREAD" in m.label_ids]
    return 200, {
        **label,
        "messagesTotal": len(carrying),
        "messagesUnread": len(unread),
        "threadsTotal": len({m.thread_id for m in carrying}),
        "threadsUnread": len({m.thread_id for m in unread}),
    }


def labels_create(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    body = request.json()
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("Invalid label name")
    extra = {key: body[key] for key in ("labelListVisibility", "messageListVisibility") if key in body}
    label_id = store.create_label(box.email, name, **extra)
    return 200, dict(box.labels[label_id])


def labels_delete(store: GmailStore, box: Mailbox, request: ApiRequest, label_id: str) -> Result:
    store.delete_label(box.email, label_id)
    return 204, None


def messages_list(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    limit = request.integer("maxResults", 100, low=1, high=500)
    found, token, matches = _scan(box, request, limit)
    out: Json = {}
    if found:
        out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in found]
    if token:
        out["nextPageToken"] = token
    out["resultSizeEstimate"] = _estimate(box, request, matches)
    return 200, out


def _estimate(box: Mailbox, request: ApiRequest, matches: Callable[[StoredMessage], bool]) -> int:
    # Exact, cached per query until the mailbox changes (a full scan per page would be wasteful).
    cache_key = (
        box.history_id,
        request.param("q"),
        tuple(request.params.get("labelIds", [])),
        request.flag("includeSpamTrash"),
    )
    cache = box.estimates
    if cache_key not in cache:
        if len(cache) > 64:
            cache.clear()
        cache[cache_key] = sum(1 for message in box.messages.values() if matches(message))
    return cache[cache_key]


def threads_list(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    limit = request.integer("maxResults", 100, low=1, high=500)
    found, token, _ = _scan(box, request, limit, threads=True)
    out: Json = {}
    if found:
        out["threads"] = [
            {"id": m.thread_id, "snippet": m.facts.snippet, "historyId": str(_thread_history(box, m.thread_id))}
            for m in found
        ]
    if token:
        out["nextPageToken"] = token
    out["resultSizeEstimate"] = len(found)
    return 200, out


def _thread_history(box: Mailbox, thread_id: str) -> int:
    return max(box.messages[msg_id].history_id for msg_id in box.threads[thread_id])


def messages_get(store: GmailStore, box: Mailbox, request: ApiRequest, msg_id: str) -> Result:
    message = store.get(box, msg_id)
    return 200, message_json(message, _format(request), request.params.get("metadataHeaders"))


def threads_get(store: GmailStore, box: Mailbox, request: ApiRequest, thread_id: str) -> Result:
    ids = box.threads.get(thread_id)
    if not ids:
        raise not_found()
    fmt, headers = _format(request), request.params.get("metadataHeaders")
    members = sorted((box.messages[msg_id] for msg_id in ids), key=lambda m: (m.internal_date, m.seq))
    return 200, {
        "id": thread_id,
        "historyId": str(_thread_history(box, thread_id)),
        "messages": [message_json(m, fmt, headers) for m in members],
    }


def _label_lists(body: Json) -> tuple[list[str], list[str]]:
    add, remove = body.get("addLabelIds") or [], body.get("removeLabelIds") or []
    if not isinstance(add, list) or not isinstance(remove, list):
        raise invalid("addLabelIds and removeLabelIds must be lists")
    return add, remove


def messages_modify(store: GmailStore, box: Mailbox, request: ApiRequest, msg_id: str) -> Result:
    add, remove = _label_lists(request.json())
    store.modify(box.email, msg_id, add=add, remove=remove)
    return 200, message_json(store.get(box, msg_id), "labels")


def messages_batch_modify(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    body = request.json()
    add, remove = _label_lists(body)
    ids = body.get("ids") or []
    if not isinstance(ids, list) or len(ids) > 1000:
        raise invalid("ids must be a list of at most 1000 ids")
    store._check_labels(box, [*add, *remove])
    for msg_id in ids:
        if msg_id in box.messages:  # Gmail skips ids it does not know
            store.modify(box.email, msg_id, add=add, remove=remove)
    return 204, None


def messages_batch_delete(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    ids = request.json().get("ids") or []
    if not isinstance(ids, list) or len(ids) > 1000:
        raise invalid("ids must be a list of at most 1000 ids")
    for msg_id in ids:
        if msg_id in box.messages:
            store.delete(box.email, msg_id)
    return 204, None


def messages_trash(store: GmailStore, box: Mailbox, request: ApiRequest, msg_id: str) -> Result:
    store.trash(box.email, msg_id)
    return 200, message_json(store.get(box, msg_id), "labels")


def messages_untrash(store: GmailStore, box: Mailbox, request: ApiRequest, msg_id: str) -> Result:
    store.untrash(box.email, msg_id)
    return 200, message_json(store.get(box, msg_id), "labels")


def messages_delete(store: GmailStore, box: Mailbox, request: ApiRequest, msg_id: str) -> Result:
    store.delete(box.email, msg_id)
    return 204, None


def _posted_message(request: ApiRequest) -> tuple[bytes, Json]:
    metadata = request.json() if request.media is None or request.body else {}
    if request.media is not None:
        return request.media, metadata
    raw = metadata.get("raw")
    if not isinstance(raw, str) or not raw:
        raise invalid("'raw' RFC822 payload message string or uploading message via /upload/* URL required")
    try:
        return b64url_decode(raw), metadata
    except ValueError as exc:
        raise invalid("Invalid value for ByteString") from exc


def _header_block(raw: bytes) -> bytes:
    match = re.search(rb"\r?\n\r?\n", raw)
    return raw[: match.start()] if match else raw


def _with_missing_headers(raw: bytes, box: Mailbox) -> bytes:
    """Add what Gmail adds to a sent message that lacks it: Message-ID, Date, From."""
    head = _header_block(raw).lower()
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    added = b""
    if not re.search(rb"(^|\n)message-id:", head):
        added += b"Message-ID: <CA+" + secrets.token_hex(16).encode() + b"@mail.gmail.com>" + newline
    if not re.search(rb"(^|\n)date:", head):
        added += b"Date: " + email.utils.formatdate().encode() + newline
    if not re.search(rb"(^|\n)from:", head):
        added += b"From: " + box.email.encode() + newline
    return added + raw


def _from_rewritten(raw: bytes, box: Mailbox) -> bytes:
    """Gmail sends a message whose From is not the account or one of its accepted "Send mail as" aliases from
    the account's own address instead, without saying so."""
    head = _header_block(raw)
    match = re.search(rb"(?im)^from:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    if match is None:
        return raw
    _name, address = email.utils.parseaddr(match.group(1).decode("utf-8", "replace"))
    if box.may_send_as(address):
        return raw
    return raw[: match.start()] + b"From: " + box.email.encode() + raw[match.end() :]


def messages_send(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    raw, metadata = _posted_message(request)
    if not re.search(rb"(^|\n)(to|cc|bcc):", _header_block(raw).lower()):
        raise invalid("Recipient address required")
    thread_id = metadata.get("threadId") or None
    stored = _with_missing_headers(_from_rewritten(raw, box), box)
    message = store.record_sent(box.email, raw, thread_id=thread_id, stored_raw=stored)
    return 200, message_json(message, "labels")


def messages_insert(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    raw, metadata = _posted_message(request)
    labels = metadata.get("labelIds") or []
    message_id = store.insert_message(
        box.email,
        raw,
        label_ids=labels,
        thread_id=metadata.get("threadId"),
        internal_date=None if request.param("internalDateSource") == "dateHeader" else _now_ms(),
    )
    return 200, message_json(store.get(box, message_id), "labels")


def messages_import(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    raw, metadata = _posted_message(request)
    labels = metadata.get("labelIds") or ["INBOX", "UNREAD"]
    message_id = store.insert_message(
        box.email,
        raw,
        label_ids=labels,
        thread_id=metadata.get("threadId"),
        internal_date=None if request.param("internalDateSource") != "receivedTime" else _now_ms(),
    )
    return 200, message_json(store.get(box, message_id), "labels")


def _now_ms() -> int:
    from sandbox.gmail.mime import now_ms

    return now_ms()


def attachments_get(store: GmailStore, box: Mailbox, request: ApiRequest, msg_id: str, attachment: str) -> Result:
    message = store.get(box, msg_id)
    parsed = parse_attachment_id(attachment)
    if parsed is None or parsed[0] != msg_id:
        raise invalid("Invalid attachment token")
    data = find_part(message.raw, parsed[1])
    if data is None:
        raise not_found()
    return 200, {"attachmentId": attachment, "size": len(data), "data": b64url(data)}


_HISTORY_KEYS = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}


def send_as_list(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    return 200, {"sendAs": box.send_as_list()}


def send_as_get(store: GmailStore, box: Mailbox, request: ApiRequest, address: str) -> Result:
    for item in box.send_as_list():
        if item["sendAsEmail"].lower() == address.lower():
            return 200, item
    raise not_found()


def _posted_draft(request: ApiRequest) -> tuple[bytes, str | None]:
    body = request.json()
    if request.media is not None:
        return request.media, None
    message = body.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("raw"), str) or not message["raw"]:
        raise invalid("Message payload required: message.raw")
    try:
        return b64url_decode(message["raw"]), message.get("threadId") or None
    except ValueError as exc:
        raise invalid("Invalid value for ByteString") from exc


def _draft_json(draft_id: str, message: StoredMessage, fmt: str = "labels") -> Json:
    return {"id": draft_id, "message": message_json(message, fmt)}


def drafts_list(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    limit = request.integer("maxResults", 100, low=1, high=500)
    start = int(request.param("pageToken") or 0) if (request.param("pageToken") or "0").isdigit() else None
    if start is None:
        raise invalid("Invalid pageToken")
    ordered = sorted(box.drafts.items(), key=lambda item: box.messages[item[1]].order_key)
    page = ordered[start : start + limit]
    out: Json = {"resultSizeEstimate": len(ordered)}
    if page:
        out["drafts"] = [
            {"id": draft_id, "message": {"id": msg_id, "threadId": box.messages[msg_id].thread_id}}
            for draft_id, msg_id in page
        ]
    if start + limit < len(ordered):
        out["nextPageToken"] = str(start + limit)
    return 200, out


def drafts_get(store: GmailStore, box: Mailbox, request: ApiRequest, draft_id: str) -> Result:
    return 200, _draft_json(draft_id, store.draft_message(box, draft_id), _format(request))


def drafts_create(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    raw, thread_id = _posted_draft(request)
    draft_id, view = store.draft_create(box.email, raw, thread_id=thread_id)
    return 200, _draft_json(draft_id, store.get(box, view.id))


def drafts_update(store: GmailStore, box: Mailbox, request: ApiRequest, draft_id: str) -> Result:
    raw, thread_id = _posted_draft(request)
    view = store.draft_update(box.email, draft_id, raw, thread_id=thread_id)
    return 200, _draft_json(draft_id, store.get(box, view.id))


def drafts_delete(store: GmailStore, box: Mailbox, request: ApiRequest, draft_id: str) -> Result:
    store.draft_delete(box.email, draft_id)
    return 204, None


def drafts_send(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    draft_id = request.json().get("id")
    if not isinstance(draft_id, str) or not draft_id:
        raise invalid("Draft id required")
    view = store.draft_send(box.email, draft_id)
    return 200, message_json(store.get(box, view.id), "labels")


def labels_patch(store: GmailStore, box: Mailbox, request: ApiRequest, label_id: str) -> Result:
    name = request.json().get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise invalid("Invalid label name")
    if name is not None:
        store.rename_label(box.email, label_id, name)
    return 200, dict(box.labels[label_id])


def history_list(store: GmailStore, box: Mailbox, request: ApiRequest) -> Result:
    start_text = request.param("startHistoryId")
    if not start_text or not start_text.isdigit():
        raise invalid("Missing or invalid startHistoryId")
    start = int(start_text)
    if start < box.history_floor:
        raise not_found()
    limit = request.integer("maxResults", 100, low=1, high=500)
    resume = request.param("pageToken")
    if resume is not None and not resume.isdigit():
        raise invalid("Invalid pageToken")
    after = max(start, int(resume)) if resume else start
    kinds = set(request.params.get("historyTypes", [])) or set(_HISTORY_KEYS)
    unknown = kinds - set(_HISTORY_KEYS)
    if unknown:
        raise invalid(f"Invalid historyTypes: {sorted(unknown)}")
    label_id = request.param("labelId")
    pending = []
    for record in reversed(box.history):
        if record.id <= after:
            break
        pending.append(record)
    pending.reverse()
    entries: list[Json] = []
    token = None
    for record in pending:
        if record.kind not in kinds:
            continue
        if label_id and label_id not in record.label_ids and label_id not in record.changed:
            continue
        if len(entries) == limit:
            token = entries[-1]["id"]
            break
        entries.append(_history_entry(record))
    out: Json = {}
    if entries:
        out["history"] = entries
    if token:
        out["nextPageToken"] = token
    out["historyId"] = str(box.history_id)
    return 200, out


def _history_entry(record) -> Json:
    ref = {"id": record.message_id, "threadId": record.thread_id}
    message = dict(ref)
    if record.kind != "messageDeleted":
        message["labelIds"] = list(record.label_ids)
    change: Json = {"message": message}
    if record.kind in ("labelAdded", "labelRemoved"):
        change["labelIds"] = list(record.changed)
    return {"id": str(record.id), "messages": [ref], _HISTORY_KEYS[record.kind]: [change]}


# (HTTP method, path pattern relative to users/{userId}/, API method id, handler)
ROUTES: list[tuple[str, re.Pattern[str], str, Callable[..., Result]]] = [
    (verb, re.compile(pattern), method, cast(Callable[..., Result], handler))  # handlers' signatures differ
    for verb, pattern, method, handler in [
        ("GET", r"profile", "getProfile", get_profile),
        ("GET", r"labels", "labels.list", labels_list),
        ("POST", r"labels", "labels.create", labels_create),
        ("GET", r"labels/([^/]+)", "labels.get", labels_get),
        ("DELETE", r"labels/([^/]+)", "labels.delete", labels_delete),
        ("PATCH", r"labels/([^/]+)", "labels.patch", labels_patch),
        ("GET", r"drafts", "drafts.list", drafts_list),
        ("POST", r"drafts", "drafts.create", drafts_create),
        ("POST", r"drafts/send", "drafts.send", drafts_send),
        ("GET", r"drafts/([^/]+)", "drafts.get", drafts_get),
        ("PUT", r"drafts/([^/]+)", "drafts.update", drafts_update),
        ("DELETE", r"drafts/([^/]+)", "drafts.delete", drafts_delete),
        ("GET", r"messages", "messages.list", messages_list),
        ("POST", r"messages/send", "messages.send", messages_send),
        ("POST", r"messages/batchModify", "messages.batchModify", messages_batch_modify),
        ("POST", r"messages/batchDelete", "messages.batchDelete", messages_batch_delete),
        ("POST", r"messages/import", "messages.import", messages_import),
        ("POST", r"messages", "messages.insert", messages_insert),
        ("GET", r"messages/([^/]+)/attachments/([^/]+)", "messages.attachments.get", attachments_get),
        ("GET", r"messages/([^/]+)", "messages.get", messages_get),
        ("DELETE", r"messages/([^/]+)", "messages.delete", messages_delete),
        ("POST", r"messages/([^/]+)/modify", "messages.modify", messages_modify),
        ("POST", r"messages/([^/]+)/trash", "messages.trash", messages_trash),
        ("POST", r"messages/([^/]+)/untrash", "messages.untrash", messages_untrash),
        ("GET", r"threads", "threads.list", threads_list),
        ("GET", r"threads/([^/]+)", "threads.get", threads_get),
        ("GET", r"history", "history.list", history_list),
        ("GET", r"settings/sendAs", "settings.sendAs.list", send_as_list),
        ("GET", r"settings/sendAs/([^/]+)", "settings.sendAs.get", send_as_get),
    ]
]


def route(http_method: str, path: str) -> tuple[str, Callable[..., Result], tuple[str, ...]] | None:
    for verb, pattern, method, handler in ROUTES:
        match = pattern.fullmatch(path)
        if match and verb == http_method:
            return method, handler, match.groups()
    return None
