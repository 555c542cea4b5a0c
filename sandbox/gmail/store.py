"""The sandbox Gmail mailboxes: messages, labels, threads, history, quota and failure controls.

Everything is in memory behind one re-entrant lock. Tests and benchmarks drive it directly
(``insert_message``, ``modify``, ``expire_history``, ``fail_next``...); :mod:`sandbox.gmail.app`
serves it over HTTP as the Gmail API.
"""

from __future__ import annotations

import bisect
import collections
import gzip
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sandbox.gmail.mime import MessageFacts, b64url, b64url_decode, facts_of, now_ms

SYSTEM_LABELS = (
    "CHAT",
    "SENT",
    "INBOX",
    "IMPORTANT",
    "TRASH",
    "DRAFT",
    "SPAM",
    "CATEGORY_FORUMS",
    "CATEGORY_UPDATES",
    "CATEGORY_PERSONAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_SOCIAL",
    "STARRED",
    "UNREAD",
)
# Google's published quota units per method (https://developers.google.com/gmail/api/reference/quota).
METHOD_COSTS = {
    "drafts.create": 10,
    "drafts.delete": 10,
    "drafts.get": 5,
    "drafts.list": 5,
    "drafts.send": 100,
    "drafts.update": 15,
    "getProfile": 1,
    "history.list": 2,
    "labels.create": 5,
    "labels.delete": 5,
    "labels.get": 1,
    "labels.list": 1,
    "labels.patch": 5,
    "labels.update": 5,
    "messages.attachments.get": 5,
    "messages.batchDelete": 50,
    "messages.batchModify": 50,
    "messages.delete": 10,
    "messages.get": 5,
    "messages.import": 25,
    "messages.insert": 25,
    "messages.list": 5,
    "messages.modify": 5,
    "messages.send": 100,
    "messages.trash": 5,
    "messages.untrash": 5,
    "threads.delete": 20,
    "threads.get": 10,
    "threads.list": 10,
    "threads.modify": 10,
    "threads.trash": 10,
    "threads.untrash": 10,
    "stop": 50,
    "watch": 100,
}
QUOTA_UNITS_PER_SECOND = 250
_FIRST_MESSAGE_ID = 0x18B0_0000_0000_0000


class GmailError(Exception):
    """An error Gmail answers with (see :func:`sandbox.gmail.app.error_body` for the JSON)."""

    def __init__(self, status: int, message: str, *, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


def not_found() -> GmailError:
    return GmailError(404, "Requested entity was not found.", reason="notFound")


def invalid(message: str) -> GmailError:
    return GmailError(400, message, reason="invalidArgument")


@dataclass(slots=True)
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    label_ids: set[str]
    internal_date: int  # epoch milliseconds
    history_id: int
    seq: int
    facts: MessageFacts

    @property
    def order_key(self) -> tuple[int, int]:
        # messages.list answers newest first (by internalDate, then most recently added).
        return (-self.internal_date, -self.seq)


@dataclass(frozen=True)
class MessageView:
    """A read-only copy of a stored message for tests."""

    id: str
    thread_id: str
    raw: bytes
    label_ids: frozenset[str]
    internal_date: int
    history_id: int


@dataclass(frozen=True)
class SentMessage:
    """What users.messages.send received: the raw bytes exactly as posted, and the thread it joined."""

    id: str
    thread_id: str
    raw: bytes
    requested_thread_id: str | None


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    kind: str  # messageAdded | messageDeleted | labelAdded | labelRemoved
    message_id: str
    thread_id: str
    label_ids: tuple[str, ...]  # the message's labels after the change (empty when deleted)
    changed: tuple[str, ...] = ()  # the labels added or removed


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    method: str | None
    email: str | None


@dataclass
class Mailbox:
    email: str
    history_id: int
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    order: list[tuple[int, int, str]] = field(default_factory=list)  # sorted (order_key..., id)
    threads: dict[str, list[str]] = field(default_factory=dict)
    thread_of_msgid: dict[str, str] = field(default_factory=dict)  # RFC 5322 Message-ID -> thread id
    labels: dict[str, dict] = field(default_factory=dict)  # id -> Label resource
    label_seq: int = 0
    history: collections.deque[HistoryRecord] = field(default_factory=collections.deque)
    history_floor: int = 0  # startHistoryId below this is answered 404
    sent: list[SentMessage] = field(default_factory=list)
    trashed_from_inbox: set[str] = field(default_factory=set)
    estimates: dict[tuple, int] = field(default_factory=dict)  # messages.list resultSizeEstimate cache
    send_as: dict[str, dict] = field(default_factory=dict)  # lower-cased address -> SendAs resource (not primary)
    display_name: str = ""  # the primary address's "Send mail as" name ("" until the user sets one)
    drafts: dict[str, str] = field(default_factory=dict)  # draft id -> the id of its message (its current version)
    draft_seq: int = 0
    draft_threads_asked: dict[str, str | None] = field(default_factory=dict)  # draft id -> threadId of its last save

    def send_as_list(self) -> list[dict]:
        """The SendAs resources: the primary address first, then the aliases."""
        primary = {
            "sendAsEmail": self.email,
            "displayName": self.display_name,
            "replyToAddress": "",
            "signature": "",
            "isPrimary": True,
            "isDefault": not any(alias.get("isDefault") for alias in self.send_as.values()),
            "treatAsAlias": False,
        }
        return [primary, *(dict(alias) for alias in self.send_as.values())]

    def may_send_as(self, address: str) -> bool:
        alias = self.send_as.get(address.lower())
        return address.lower() == self.email.lower() or (alias or {}).get("verificationStatus") == "accepted"

    def label_names(self) -> dict[str, str]:
        return {label_id: label["name"] for label_id, label in self.labels.items()}


def _system_label(label_id: str) -> dict:
    label = {"id": label_id, "name": label_id, "type": "system"}
    if label_id not in ("CHAT", "SENT", "DRAFT", "TRASH", "SPAM", "IMPORTANT", "STARRED", "UNREAD") and not (
        label_id.startswith("CATEGORY_")
    ):
        label["messageListVisibility"] = "hide"
        label["labelListVisibility"] = "labelShow"
    return label


def _to_ms(value: int | float | datetime | None, fallback: int | None) -> int:
    if value is None:
        return fallback if fallback is not None else now_ms()
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class GmailStore:
    """Thread-safe in-memory Gmail mailboxes with Google's quota, history and failure behaviour."""

    def __init__(self, *, history_retention: int | None = None) -> None:
        self.lock = threading.RLock()
        self._mailboxes: dict[str, Mailbox] = {}
        self._no_mail: set[str] = set()
        self._seq = 0
        #: When true, each user gets QUOTA_UNITS_PER_SECOND units per moving one-second window.
        self.quota_enabled = False
        self.quota_units_per_second = QUOTA_UNITS_PER_SECOND
        #: Keep at most this many history records per user (older startHistoryIds then 404).
        self.history_retention = history_retention
        self._usage: dict[str, collections.deque[tuple[float, int]]] = {}
        self._failures: collections.deque[_Failure] = collections.deque()
        self._delays: collections.deque[tuple[float, str | None, str | None]] = collections.deque()
        self._fail_rate = 0.0
        self._fail_rate_status = 503
        self._random = random.Random(0)
        self._stats: collections.Counter[tuple[str, str]] = collections.Counter()
        #: At most this many requests of one user in flight at once (a batch counts each part), like
        #: Gmail's "Too many concurrent requests for user" 429; None: no limit.
        self.concurrent_limit: int | None = None
        self._inflight: collections.Counter[str] = collections.Counter()

    # --- users and labels ----------------------------------------------------------------------
    def add_user(self, email: str) -> None:
        with self.lock:
            self._no_mail.discard(email.lower())
            if email.lower() not in self._mailboxes:
                box = Mailbox(email=email, history_id=1000 + len(self._mailboxes) * 1000)
                box.labels = {label_id: _system_label(label_id) for label_id in SYSTEM_LABELS}
                box.history_floor = box.history_id
                self._mailboxes[email.lower()] = box

    def disable_mail(self, email: str) -> None:
        """Make ``email`` a Google account without Gmail: the API answers 400 failedPrecondition."""
        with self.lock:
            self._mailboxes.pop(email.lower(), None)
            self._no_mail.add(email.lower())

    def api_mailbox(self, email: str) -> Mailbox:
        """The mailbox an authenticated API call works on, created on first use like a new account's."""
        with self.lock:
            if email.lower() not in self._no_mail:
                self.add_user(email)
            return self.mailbox(email)

    def users(self) -> list[str]:
        with self.lock:
            return [box.email for box in self._mailboxes.values()]

    def has_user(self, email: str) -> bool:
        with self.lock:
            return email.lower() in self._mailboxes

    def mailbox(self, email: str) -> Mailbox:
        """The live mailbox (hold ``store.lock`` while using it); 400 failedPrecondition if none."""
        box = self._mailboxes.get(email.lower())
        if box is None:
            raise GmailError(400, "Mail service not enabled", reason="failedPrecondition")
        return box

    def send_as_add(
        self, email: str, address: str, *, display_name: str = "", default: bool = False, verified: bool = True
    ) -> None:
        """A "Send mail as" alias of ``email`` (verified or still pending), optionally the default From."""
        with self.lock:
            box = self.mailbox(email)
            if default:
                for alias in box.send_as.values():
                    alias["isDefault"] = False
            box.send_as[address.lower()] = {
                "sendAsEmail": address,
                "displayName": display_name,
                "replyToAddress": "",
                "signature": "",
                "isPrimary": False,
                "isDefault": default,
                "treatAsAlias": True,
                "verificationStatus": "accepted" if verified else "pending",
            }

    def send_as_remove(self, email: str, address: str) -> None:
        with self.lock:
            self.mailbox(email).send_as.pop(address.lower(), None)

    def display_name_set(self, email: str, name: str) -> None:
        with self.lock:
            self.mailbox(email).display_name = name

    def labels(self, email: str) -> list[dict]:
        with self.lock:
            return [dict(label) for label in self.mailbox(email).labels.values()]

    def create_label(self, email: str, name: str, **extra: str) -> str:
        with self.lock:
            box = self.mailbox(email)
            if not name.strip() or any(label["name"].lower() == name.lower() for label in box.labels.values()):
                raise GmailError(409, "Label name exists or conflicts", reason="duplicate")
            box.label_seq += 1
            label_id = f"Label_{box.label_seq}"
            box.labels[label_id] = {
                "id": label_id,
                "name": name,
                "type": "user",
                "messageListVisibility": extra.get("messageListVisibility", "show"),
                "labelListVisibility": extra.get("labelListVisibility", "labelShow"),
            }
            return label_id

    @staticmethod
    def _user_label(box: Mailbox, label_id: str, *, refusal: str) -> dict:
        """The label a change is asked for: 404 if there is none, 400 ``refusal`` for a system label."""
        label = box.labels.get(label_id)
        if label is None:
            raise not_found()
        if label["type"] == "system":
            raise invalid(refusal)
        return label

    def rename_label(self, email: str, label_id: str, name: str) -> None:
        with self.lock:
            box = self.mailbox(email)
            label = self._user_label(box, label_id, refusal="Invalid label name")
            taken = any(other["name"].lower() == name.lower() for key, other in box.labels.items() if key != label_id)
            if taken:
                raise GmailError(409, "Label name exists or conflicts", reason="duplicate")
            label["name"] = name

    def delete_label(self, email: str, label_id: str) -> None:
        with self.lock:
            box = self.mailbox(email)
            self._user_label(box, label_id, refusal="Invalid delete request")
            for message in list(box.messages.values()):
                if label_id in message.label_ids:
                    self._change_labels(box, message, add=(), remove=(label_id,))
            del box.labels[label_id]

    # --- messages ------------------------------------------------------------------------------
    def insert_message(
        self,
        email: str,
        raw: bytes,
        *,
        label_ids: Iterable[str] = ("INBOX", "UNREAD"),
        thread_id: str | None = None,
        internal_date: int | float | datetime | None = None,
    ) -> str:
        """Deliver ``raw`` to ``email`` (created if needed); returns the Gmail message id.

        ``internal_date`` (epoch ms or datetime) defaults to the Date header, else now. Without
        ``thread_id`` the message joins the thread of a message it names in In-Reply-To/References.
        """
        return self._insert(email, raw, facts_of(raw), label_ids, thread_id, internal_date)

    def _insert(
        self,
        email: str,
        raw: bytes,
        facts: MessageFacts,
        label_ids: Iterable[str],
        thread_id: str | None,
        internal_date: int | float | datetime | None,
    ) -> str:
        with self.lock:
            self.add_user(email)
            box = self.mailbox(email)
            labels = set(label_ids)
            self._check_labels(box, labels)
            return self._add(box, raw, facts, labels, thread_id, _to_ms(internal_date, facts.date_ms)).id

    def seed(
        self,
        email: str,
        raws: Iterable[bytes],
        *,
        labels: Callable[[int, bytes], Iterable[str]] | None = None,
    ) -> list[str]:
        """Insert many messages; ``labels(index, raw)`` picks each one's labels (default: see seed_labels)."""
        ids = []
        for index, raw in enumerate(raws):
            facts = facts_of(raw)
            chosen = labels(index, raw) if labels else seed_labels(raw, owner=email, index=index, facts=facts)
            ids.append(self._insert(email, raw, facts, chosen, None, None))
        return ids

    def _check_labels(self, box: Mailbox, labels: Iterable[str]) -> None:
        for label_id in labels:
            if label_id not in box.labels:
                raise invalid(f"Invalid label: {label_id}")

    def _add(
        self,
        box: Mailbox,
        raw: bytes,
        facts: MessageFacts,
        labels: set[str],
        thread_id: str | None,
        internal_date: int,
        message_id: str | None = None,
        force_thread: bool = False,
    ) -> StoredMessage:
        self._seq += 1
        msg_id = message_id or f"{_FIRST_MESSAGE_ID + self._seq:016x}"
        if not (thread_id and (force_thread or thread_id in box.threads)):
            thread_id = next(
                (
                    box.thread_of_msgid[ref]
                    for ref in [*facts.in_reply_to, *reversed(facts.references)]
                    if ref in box.thread_of_msgid and box.thread_of_msgid[ref] in box.threads
                ),
                msg_id,
            )
        box.history_id += 1
        message = StoredMessage(
            id=msg_id,
            thread_id=thread_id,
            raw=raw,
            label_ids=labels,
            internal_date=internal_date,
            history_id=box.history_id,
            seq=self._seq,
            facts=facts,
        )
        box.messages[msg_id] = message
        bisect.insort(box.order, (*message.order_key, msg_id))
        box.threads.setdefault(thread_id, []).append(msg_id)
        if facts.message_id:
            box.thread_of_msgid.setdefault(facts.message_id, thread_id)
        self._record(box, "messageAdded", message)
        return message

    def _record(self, box: Mailbox, kind: str, message: StoredMessage, changed: tuple[str, ...] = ()) -> None:
        box.history.append(
            HistoryRecord(
                id=box.history_id,
                kind=kind,
                message_id=message.id,
                thread_id=message.thread_id,
                label_ids=tuple(sorted(message.label_ids)) if kind != "messageDeleted" else (),
                changed=changed,
            )
        )
        if self.history_retention is not None:
            while len(box.history) > self.history_retention:
                dropped = box.history.popleft()
                box.history_floor = dropped.id

    def get(self, box: Mailbox, msg_id: str) -> StoredMessage:
        message = box.messages.get(msg_id)
        if message is None:
            raise not_found()
        return message

    def _change_labels(
        self, box: Mailbox, message: StoredMessage, *, add: Iterable[str], remove: Iterable[str]
    ) -> None:
        added = tuple(label for label in dict.fromkeys(add) if label not in message.label_ids)
        removed = tuple(label for label in dict.fromkeys(remove) if label in message.label_ids and label not in added)
        if added:
            box.history_id += 1
            message.label_ids.update(added)
            message.history_id = box.history_id
            self._record(box, "labelAdded", message, added)
        if removed:
            box.history_id += 1
            message.label_ids.difference_update(removed)
            message.history_id = box.history_id
            self._record(box, "labelRemoved", message, removed)

    def modify(self, email: str, msg_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> MessageView:
        with self.lock:
            box = self.mailbox(email)
            message = self.get(box, msg_id)
            add, remove = list(add), list(remove)
            self._check_labels(box, [*add, *remove])
            self._change_labels(box, message, add=add, remove=remove)
            return _view(message)

    def trash(self, email: str, msg_id: str) -> MessageView:
        with self.lock:
            box = self.mailbox(email)
            message = self.get(box, msg_id)
            if "INBOX" in message.label_ids:
                box.trashed_from_inbox.add(msg_id)
            self._change_labels(box, message, add=("TRASH",), remove=("INBOX", "SPAM"))
            return _view(message)

    def untrash(self, email: str, msg_id: str) -> MessageView:
        with self.lock:
            box = self.mailbox(email)
            message = self.get(box, msg_id)
            restore = ("INBOX",) if msg_id in box.trashed_from_inbox and "TRASH" in message.label_ids else ()
            box.trashed_from_inbox.discard(msg_id)
            self._change_labels(box, message, add=restore, remove=("TRASH",))
            return _view(message)

    def delete(self, email: str, msg_id: str) -> None:
        """Delete permanently (records messageDeleted)."""
        with self.lock:
            box = self.mailbox(email)
            message = self.get(box, msg_id)
            del box.messages[msg_id]
            index = bisect.bisect_left(box.order, (*message.order_key, msg_id))
            del box.order[index]
            siblings = box.threads[message.thread_id]
            siblings.remove(msg_id)
            if not siblings:
                del box.threads[message.thread_id]
            box.trashed_from_inbox.discard(msg_id)
            box.drafts = {draft: current for draft, current in box.drafts.items() if current != msg_id}
            box.history_id += 1
            message.history_id = box.history_id
            self._record(box, "messageDeleted", message)

    def message(self, email: str, msg_id: str) -> MessageView:
        with self.lock:
            return _view(self.get(self.mailbox(email), msg_id))

    def messages(self, email: str) -> list[MessageView]:
        """Every message of ``email``, newest first."""
        with self.lock:
            box = self.mailbox(email)
            return [_view(box.messages[key[-1]]) for key in box.order]

    def threads(self, email: str) -> dict[str, list[str]]:
        with self.lock:
            return {thread_id: list(ids) for thread_id, ids in self.mailbox(email).threads.items()}

    def sent_messages(self, email: str) -> list[SentMessage]:
        with self.lock:
            return list(self.mailbox(email).sent)

    def record_sent(self, email: str, raw: bytes, *, thread_id: str | None, stored_raw: bytes) -> StoredMessage:
        """users.messages.send: store with SENT (and INBOX if addressed to oneself), keep what arrived."""
        facts = facts_of(stored_raw)
        with self.lock:
            box = self.mailbox(email)
            labels = {"SENT"}
            if email.lower() in facts.recipients:
                labels |= {"INBOX", "UNREAD"}
            message = self._add(box, stored_raw, facts, labels, thread_id, now_ms())
            box.sent.append(
                SentMessage(id=message.id, thread_id=message.thread_id, raw=raw, requested_thread_id=thread_id)
            )
            return message

    # --- drafts --------------------------------------------------------------------------------
    def draft_create(self, email: str, raw: bytes, *, thread_id: str | None = None) -> tuple[str, MessageView]:
        """A new draft (users.drafts.create, or the user writing one in Gmail): its id and its message."""
        with self.lock:
            box = self.mailbox(email)
            box.draft_seq += 1
            draft_id = f"r-{box.draft_seq:019d}"
            message = self._add(box, raw, facts_of(raw), {"DRAFT"}, thread_id, now_ms())
            box.drafts[draft_id] = message.id
            box.draft_threads_asked[draft_id] = thread_id
            return draft_id, _view(message)

    def draft_update(self, email: str, draft_id: str, raw: bytes, *, thread_id: str | None = None) -> MessageView:
        """Replace the draft's message: the new version has a new message id, the old one is deleted."""
        with self.lock:
            box = self.mailbox(email)
            old = self.draft_message(box, draft_id)
            message = self._add(box, raw, facts_of(raw), {"DRAFT"}, thread_id or old.thread_id, now_ms())
            self.delete(email, old.id)
            box.drafts[draft_id] = message.id
            box.draft_threads_asked[draft_id] = thread_id
            return _view(message)

    def draft_delete(self, email: str, draft_id: str) -> None:
        with self.lock:
            box = self.mailbox(email)
            self.delete(email, self.draft_message(box, draft_id).id)

    def draft_send(self, email: str, draft_id: str) -> MessageView:
        """users.drafts.send (or Send in Gmail): the draft becomes a sent message and is no longer a draft."""
        with self.lock:
            box = self.mailbox(email)
            draft = self.draft_message(box, draft_id)
            self.delete(email, draft.id)
            stored = _with_message_id(draft.raw)
            return _view(self.record_sent(email, draft.raw, thread_id=draft.thread_id, stored_raw=stored))

    def draft_thread_asked(self, email: str, draft_id: str) -> str | None:
        """The threadId the last save of the draft asked for (None: none; Gmail then threads by the headers)."""
        with self.lock:
            return self.mailbox(email).draft_threads_asked.get(draft_id)

    def drafts(self, email: str) -> dict[str, MessageView]:
        """Every draft of ``email``: draft id -> its current message."""
        with self.lock:
            box = self.mailbox(email)
            return {draft_id: _view(box.messages[msg_id]) for draft_id, msg_id in box.drafts.items()}

    def draft_message(self, box: Mailbox, draft_id: str) -> StoredMessage:
        msg_id = box.drafts.get(draft_id)
        if msg_id is None or msg_id not in box.messages:
            raise not_found()
        return box.messages[msg_id]

    # --- history -------------------------------------------------------------------------------
    def history_id(self, email: str) -> int:
        with self.lock:
            return self.mailbox(email).history_id

    def expire_history(self, email: str) -> None:
        """Forget all history: any startHistoryId older than the current one now answers 404."""
        with self.lock:
            box = self.mailbox(email)
            box.history.clear()
            box.history_floor = box.history_id

    # --- quota, failures, stats ----------------------------------------------------------------
    def charge(self, email: str, method: str) -> float | None:
        """Charge ``method``'s units to ``email``; the seconds to wait if that would exceed the quota."""
        cost = METHOD_COSTS.get(method, 5)
        with self.lock:
            self._stats[(email.lower(), "units")] += cost
            if not self.quota_enabled:
                return None
            now = time.monotonic()
            window = self._usage.setdefault(email.lower(), collections.deque())
            while window and window[0][0] <= now - 1.0:
                window.popleft()
            used = sum(units for _, units in window)
            if used + cost > self.quota_units_per_second:
                self._stats[(email.lower(), "units")] -= cost
                freed, wait = 0, 0.0
                for stamp, units in window:
                    freed += units
                    wait = stamp + 1.0 - now
                    if used - freed + cost <= self.quota_units_per_second:
                        break
                return max(wait, 0.001)
            window.append((now, cost))
            return None

    def enter(self, email: str, n: int) -> int:
        """Start ``n`` requests of ``email``; how many the concurrency limit lets through."""
        with self.lock:
            key, limit = email.lower(), self.concurrent_limit
            allowed = n if limit is None else max(0, min(n, limit - self._inflight[key]))
            self._inflight[key] += allowed
            return allowed

    def leave(self, email: str, n: int) -> None:
        with self.lock:
            self._inflight[email.lower()] -= n

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        retry_after: float | None = None,
        method: str | None = None,
        email: str | None = None,
    ) -> None:
        """Answer the next ``n`` API calls (optionally only of ``method``/``email``) with ``status``.

        Each sub-request of a batch is one call. 429 answers rateLimitExceeded; 5xx backendError;
        401 authError; 403 rateLimitExceeded (Google's older per-user limit answer).
        """
        with self.lock:
            for _ in range(n):
                self._failures.append(_Failure(status, retry_after, method, email.lower() if email else None))

    def fail_rate(self, p: float, *, status: int = 503, seed: int | None = 0) -> None:
        """Fail each API call with probability ``p`` (0 turns it off)."""
        with self.lock:
            self._fail_rate, self._fail_rate_status = p, status
            self._random = random.Random(seed)

    def delay_next(self, seconds: float, *, method: str | None = None, email: str | None = None) -> None:
        """Answer the next API call (optionally only of ``method``/``email``) after ``seconds``: a slow Gmail."""
        with self.lock:
            self._delays.append((seconds, method, email.lower() if email else None))

    def injected_delay(self, email: str, method: str) -> float:
        with self.lock:
            for delay in self._delays:
                seconds, wanted_method, wanted_email = delay
                if wanted_method in (None, method) and wanted_email in (None, email.lower()):
                    self._delays.remove(delay)
                    return seconds
        return 0.0

    def clear_failures(self) -> None:
        with self.lock:
            self._failures.clear()
            self._delays.clear()
            self._fail_rate = 0.0

    def injected_failure(self, email: str, method: str) -> GmailError | None:
        with self.lock:
            for failure in self._failures:
                if (failure.method in (None, method)) and (failure.email in (None, email.lower())):
                    self._failures.remove(failure)
                    return failure_error(failure.status, failure.retry_after)
            if self._fail_rate and self._random.random() < self._fail_rate:
                return failure_error(self._fail_rate_status, None)
        return None

    def count(self, email: str, key: str) -> None:
        with self.lock:
            self._stats[(email.lower(), key)] += 1

    def stats(self, email: str | None = None) -> dict[str, int]:
        """Counters: one per API method called ("messages.get", ...), plus "http_requests" (HTTP
        requests, a batch counting once), "batch" (batch envelopes), "throttled" (quota 429s),
        "injected_failures", "unauthorized" and "units" (quota units charged)."""
        with self.lock:
            totals: collections.Counter[str] = collections.Counter()
            for (user, key), value in self._stats.items():
                if email is None or user == email.lower():
                    totals[key] += value
            return dict(totals)

    def reset_stats(self) -> None:
        with self.lock:
            self._stats.clear()

    def reset(self) -> None:
        """Forget every mailbox and go back to defaults (quota off, no failures, zero stats)."""
        with self.lock:
            self._mailboxes.clear()
            self._no_mail.clear()
            self._usage.clear()
            self._failures.clear()
            self._delays.clear()
            self._fail_rate = 0.0
            self._stats.clear()
            self.quota_enabled = False
            self.quota_units_per_second = QUOTA_UNITS_PER_SECOND
            self.concurrent_limit = None
            self.history_retention = None

    # --- snapshots -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write every mailbox (labels, messages, threads) to a gzipped JSON snapshot."""
        with self.lock:
            data = {"version": 1, "users": [self._dump(box) for box in self._mailboxes.values()]}
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            json.dump(data, handle)

    @staticmethod
    def _dump(box: Mailbox) -> dict:
        ordered = sorted(box.messages.values(), key=lambda m: m.seq)
        return {
            "email": box.email,
            "historyId": box.history_id,
            "displayName": box.display_name,
            "sendAs": list(box.send_as.values()),
            "drafts": box.drafts,
            "labels": [label for label in box.labels.values() if label["type"] == "user"],
            "messages": [
                {
                    "id": m.id,
                    "threadId": m.thread_id,
                    "labelIds": sorted(m.label_ids),
                    "internalDate": m.internal_date,
                    "raw": b64url(m.raw),
                }
                for m in ordered
            ],
        }

    def load(self, path: str | Path) -> None:
        """Add the mailboxes of a snapshot written by :meth:`save`. History starts afresh from the saved
        historyId, so a client that was up to date stays up to date and an older cursor gets Gmail's 404."""
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
        with self.lock:
            for user in data["users"]:
                self.add_user(user["email"])
                box = self.mailbox(user["email"])
                box.display_name = user.get("displayName", "")
                box.send_as.update({alias["sendAsEmail"].lower(): alias for alias in user.get("sendAs", [])})
                for label in user["labels"]:
                    box.labels[label["id"]] = label
                    box.label_seq = max(box.label_seq, int(label["id"].rpartition("_")[2] or 0))
                for item in user["messages"]:
                    raw = b64url_decode(item["raw"])
                    if item["id"] in box.messages:
                        continue
                    self._add(
                        box,
                        raw,
                        facts_of(raw),
                        set(item["labelIds"]),
                        item["threadId"],
                        int(item["internalDate"]),
                        message_id=item["id"],
                        force_thread=True,
                    )
                box.drafts.update(user.get("drafts", {}))
                box.draft_seq = max([box.draft_seq, *(int(d.removeprefix("r-")) for d in box.drafts)])
                box.history.clear()
                box.history_id = max(box.history_id, int(user.get("historyId", 0)))
                box.history_floor = box.history_id


def _with_message_id(raw: bytes) -> bytes:
    """Gmail gives a sent message a Message-ID when it has none."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0].lower()
    if re.search(rb"(^|\n)message-id:", head):
        return raw
    return b"Message-ID: <CA+" + secrets.token_hex(16).encode() + b"@mail.gmail.com>\r\n" + raw


def _view(message: StoredMessage) -> MessageView:
    return MessageView(
        id=message.id,
        thread_id=message.thread_id,
        raw=message.raw,
        label_ids=frozenset(message.label_ids),
        internal_date=message.internal_date,
        history_id=message.history_id,
    )


def failure_error(status: int, retry_after: float | None) -> GmailError:
    if status == 429:
        return GmailError(
            429, "Too many concurrent requests for user.", reason="rateLimitExceeded", retry_after=retry_after
        )
    if status == 403:
        return GmailError(403, "Rate Limit Exceeded", reason="rateLimitExceeded", retry_after=retry_after)
    if status == 401:
        return GmailError(401, "Request had invalid authentication credentials.", reason="authError")
    if status == 503:
        return GmailError(503, "The service is currently unavailable.", reason="backendError", retry_after=retry_after)
    return GmailError(status, "Internal error encountered.", reason="backendError", retry_after=retry_after)


def seed_labels(raw: bytes, *, owner: str, index: int, facts: MessageFacts | None = None) -> tuple[str, ...]:
    """Plausible labels for a seeded message: SENT when the owner wrote it, else INBOX with a
    deterministic mix of read/unread, starred, important and categories."""
    facts = facts or facts_of(raw)
    if owner.lower() in facts.sender.lower():
        return ("SENT",)
    labels = ["INBOX", ("CATEGORY_PERSONAL", "CATEGORY_UPDATES", "CATEGORY_PROMOTIONS", "CATEGORY_SOCIAL")[index % 4]]
    if index % 3 == 0:
        labels.append("UNREAD")
    if index % 17 == 0:
        labels.append("STARRED")
    if index % 7 == 0:
        labels.append("IMPORTANT")
    return tuple(labels)
