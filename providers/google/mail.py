"""The Gmail sync engine, write-back and send, over the Gmail API (google-api-python-client).

- Full sync: record ``historyId`` (users.getProfile) first, list ids page by page (``after:`` from the
  account's sync start date), fetch them ``format=raw`` in batch requests of bounded size with bounded
  concurrency, hand them to the account's ``LocalMailbox``. Resumable: the page token and the ids done on
  the current page are kept in the resume point (``LocalMailbox.progress``); a resync after an expired
  history also refreshes the labels of stored messages and removes what is gone. Progress: see
  ``GmailClient._counted``; a finished full sync shows done == total == the messages stored in the sync range.
- Incremental sync: ``history.list`` from the stored ``historyId``; cost is proportional to the changes.
- Quota: a pacer shared by every worker process (``providers.google.quota``) keeps a user's requests under
  Google's 250 units per moving second and the project's under its units per minute (per-method costs);
  429 / 403 rateLimitExceeded / 5xx / network errors are retried with exponential backoff and jitter,
  honouring Retry-After. A message is never skipped because of a throttle: it is retried, or the sync
  fails with ProviderError and resumes later where it stopped.
- Syncing never changes anything on the server.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any, TypedDict

import httplib2
from django.conf import settings
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest

from providers.base import (
    Account,
    ChangeKind,
    DraftContent,
    LocalFolder,
    LocalMailbox,
    LocalMessage,
    MailboxWatch,
    MessageChange,
    Outgoing,
    RemoteDraft,
    RemoteFolder,
    RemoteMessage,
    RemoteState,
    SenderIdentity,
)
from providers.errors import AccessDenied, ActionRequired, ErrorCode, NoMailbox, ProviderError, SendUncertain
from providers.google.quota import PROJECT_UNITS_PER_MINUTE, quota_pacer

logger = logging.getLogger(__name__)

# Google's quota units per method (https://developers.google.com/gmail/api/reference/quota).
METHOD_COSTS = {
    "getProfile": 1,
    "labels.list": 1,
    "history.list": 2,
    "messages.list": 5,
    "messages.get": 5,
    "messages.modify": 5,
    "messages.batchModify": 50,
    "messages.trash": 5,
    "messages.untrash": 5,
    "messages.send": 100,
    "settings.sendAs.list": 1,
    "settings.sendAs.get": 1,
    "drafts.list": 5,
    "drafts.get": 5,
    "drafts.create": 10,
    "drafts.update": 15,
    "drafts.delete": 10,
    "labels.create": 5,
    "labels.patch": 5,
    "labels.delete": 5,
}
DEFAULT_POLL_SECONDS = 8.0  # how often a watcher asks for history: new mail shows within this
LIST_PAGE_SIZE = 500
STORE_GROUP = 100  # messages stored (and progress recorded) together
MAX_ATTEMPTS = 8  # per request or message, before the sync gives up for now (and resumes later)
MAX_THROTTLED_ATTEMPTS = 25  # 429s come with a Retry-After and the pacer slows down: allow more of them
MAX_INLINE_WAIT = 120.0  # a longer Retry-After ends the sync with ProviderError(retry_after=...)
TIMEOUT = 60

SYSTEM_FOLDERS = {
    "INBOX": ("inbox", "Inbox"),
    "SENT": ("sent", "Sent"),
    "DRAFT": ("drafts", "Drafts"),
    "TRASH": ("trash", "Trash"),
    "SPAM": ("spam", "Spam"),
    "STARRED": ("starred", "Starred"),
    "IMPORTANT": ("important", "Important"),
}
# Labels that are flags (UNREAD, STARRED...) or tabs rather than folders. STARRED is both.
NOT_FOLDERS = {"UNREAD", "CHAT"}
RETRYABLE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --- The service ----------------------------------------------------------------------------------


@functools.cache
def _discovery(root: str) -> str:
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "gmail.v1.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    # Batch and upload URLs are built from rootUrl, not from api_endpoint: replace it in the document.
    document["rootUrl"] = document["mtlsRootUrl"] = root
    document["baseUrl"] = root + document.get("servicePath", "")
    return json.dumps(document)


@functools.cache
def _service(root: str):
    return build_from_document(_discovery(root), http=httplib2.Http(timeout=TIMEOUT))


def gmail_service():
    root = settings.GOOGLE_API_ROOT.rstrip("/") + "/"
    return _service(root)


class _Gone(Exception):
    """404: the message (or history) is no longer there."""


@dataclass
class _Outcome:
    """What became of one sub-request of a batch."""

    kind: str  # "ok" | "gone" | "retry" | "unauthorized" | "denied" | "no_mailbox" | "error"
    data: dict | None = None
    throttled: bool = False
    delay: float | None = None
    detail: str = ""


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _error_reason(exc: HttpError) -> str:
    try:
        payload = json.loads(exc.content.decode("utf-8", "replace"))
        errors = payload.get("error", {}).get("errors") or []
        if errors:
            return errors[0].get("reason", "")
        return payload.get("error", {}).get("status", "")
    except (ValueError, AttributeError):
        return ""


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after") if exc.resp is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
        except (TypeError, ValueError):
            return None


def _classify(exc: HttpError) -> _Outcome:
    status = exc.resp.status if exc.resp is not None else 0
    reason = _error_reason(exc)
    if status == 401:
        return _Outcome("unauthorized")
    if status == 429 or (status == 403 and reason in RETRYABLE_REASONS):
        return _Outcome("retry", delay=_retry_after(exc), detail=f"HTTP {status}", throttled=True)
    if status >= 500:
        return _Outcome("retry", delay=_retry_after(exc), detail=f"HTTP {status}")
    if status == 404:
        return _Outcome("gone")
    if status == 403:
        return _Outcome(
            "denied", detail="Gmail refused access to this mailbox. Reconnect it and allow Mailhub to use Gmail."
        )
    if status == 400 and reason == "failedPrecondition":
        return _Outcome("no_mailbox", detail="This Google account has no Gmail mailbox.")
    said = _error_text(exc)
    return _Outcome("error", detail=f"Gmail answered with an error (HTTP {status}{': ' + said if said else ''}).")


def _error_text(exc: HttpError) -> str:
    """Gmail's own words for an error (e.g. "Label name exists or conflicts"), short and on one line."""
    try:
        message = json.loads(exc.content.decode("utf-8", "replace")).get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        return ""
    return " ".join(str(message).split())[:200]


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after + random.uniform(0, 0.25)
    return min(0.5 * 2 ** (attempt - 1), 30.0) * random.uniform(0.75, 1.25)


class _LabelFlags(TypedDict):
    is_read: bool
    is_starred: bool
    is_draft: bool


def _label_flags(label_ids: Sequence[str]) -> _LabelFlags:
    labels = set(label_ids)
    return {"is_read": "UNREAD" not in labels, "is_starred": "STARRED" in labels, "is_draft": "DRAFT" in labels}


class _BearerHttp(httplib2.Http):
    """httplib2 with the client's current access token on every request (batch envelopes included)."""

    def __init__(self, client: GmailClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = client

    def request(self, uri, method="GET", body=None, headers=None, *args, **kwargs):  # noqa: ANN001, ANN201
        headers = dict(headers or {})
        headers.setdefault("authorization", f"Bearer {self._client._token}")
        return super().request(uri, method, body, headers, *args, **kwargs)


class _SingleShotHttp:
    """An httplib2-shaped transport that makes exactly one attempt, for messages.send.

    httplib2 re-sends a request, whatever its method, when the connection drops before the answer (it takes
    that for a stale keep-alive socket, even with RETRIES = 1): a send whose answer was lost would go out twice.
    """

    def __init__(self, client: GmailClient, *, timeout: float) -> None:
        self._client = client
        self.timeout = timeout

    def request(self, uri, method="GET", body=None, headers=None, **kwargs):  # noqa: ANN001, ANN201
        parts = urllib.parse.urlsplit(uri)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=self.timeout)
        headers = dict(headers or {})
        headers.setdefault("authorization", f"Bearer {self._client._token}")
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return httplib2.Response(response), response.read()
        finally:
            connection.close()


# --- The client -----------------------------------------------------------------------------------


class GmailClient:
    """Syncs and sends for one Gmail account (see the module docstring)."""

    def __init__(
        self,
        account: Account,
        *,
        access_token: Callable[..., str],
        local: LocalMailbox,
        project_limit: int = PROJECT_UNITS_PER_MINUTE,
    ) -> None:
        self.account = account
        self.local = local
        self.access_token = access_token  # (force_refresh=False) -> a valid token, see Provider.mail_client
        self.service = gmail_service()
        self.pacer = quota_pacer(account.email, project_limit=project_limit)
        # Small batches when pacing: a batch's units count until its answer is in, so short requests pace closer
        # to the quota. Without pacing, bigger batches mean fewer round trips.
        self.batch_size = int(_setting("GMAIL_BATCH_SIZE", 0)) or (10 if self.pacer.configured else 50)
        self.concurrency = int(_setting("GMAIL_CONCURRENCY", 4))
        self._token = ""
        self._local = threading.local()
        self._folders: dict[str, LocalFolder] = {}
        self.requests_made = 0  # HTTP requests (a batch counts once), for benchmarks and tests
        self._history: Any = None

    # --- plumbing ---------------------------------------------------------------------------------
    def _http(self) -> httplib2.Http:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = _BearerHttp(self, timeout=TIMEOUT)
        return http

    def _ensure_token(self, *, force: bool = False) -> None:
        if force or not self._token:
            self._token = self.access_token(force_refresh=force)

    def _authorize(self, request: HttpRequest) -> HttpRequest:
        request.headers["authorization"] = f"Bearer {self._token}"
        return request

    def _wait(self, seconds: float) -> None:
        """Sleep (in the main thread) while keeping the sync lock alive."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.local.heartbeat()
            time.sleep(min(left, 20.0))

    def _execute(
        self,
        build: Callable[[], HttpRequest],
        *,
        method: str,
        max_attempts: int = MAX_ATTEMPTS,
        refused: ErrorCode | None = None,
    ) -> dict:
        """Run one request with pacing, token refresh and backoff; 404 raises _Gone. ``refused``: a request Gmail
        refuses (4xx) raises ActionRequired with that code and Gmail's words instead of an error retried later."""
        self._ensure_token()
        refreshed = False
        attempt = 0
        while True:
            entry = self.pacer.acquire(METHOD_COSTS.get(method, 5))
            try:
                self.requests_made += 1
                return self._authorize(build()).execute(http=self._http())
            except HttpError as exc:
                outcome = _classify(exc)
            except (TimeoutError, httplib2.HttpLib2Error, OSError) as exc:
                outcome = _Outcome("retry", detail=type(exc).__name__)
            finally:
                self.pacer.release(entry)
            if outcome.kind == "gone":
                raise _Gone
            if outcome.kind == "error" and refused is not None:
                raise ActionRequired(outcome.detail, code=refused, detail=outcome.detail)
            if outcome.kind == "unauthorized":
                if refreshed:
                    raise ProviderError("Gmail keeps rejecting Mailhub's access token. Will retry later.")
                self._ensure_token(force=True)
                refreshed = True
                continue
            self._raise_for(outcome)
            attempt += 1
            delay = _backoff(attempt, outcome.delay)
            if outcome.throttled:
                self.pacer.throttled()
            budget = max(max_attempts, MAX_THROTTLED_ATTEMPTS if outcome.throttled else 0)
            if attempt >= budget or delay > MAX_INLINE_WAIT:
                raise ProviderError(
                    f"Gmail is throttling or failing ({outcome.detail}); the sync will resume later.",
                    retry_after=delay,
                    code=ErrorCode.THROTTLED if outcome.throttled else ErrorCode.PROVIDER_FAILED,
                )
            if outcome.delay is not None:
                self.pacer.pause(outcome.delay)
            self._wait(delay)

    def _raise_for(self, outcome: _Outcome) -> None:
        """Final answers: lost permission or no mailbox need the user (ReconnectRequired); others are errors."""
        if outcome.kind == "denied":
            raise AccessDenied(outcome.detail)
        if outcome.kind == "no_mailbox":
            raise NoMailbox(outcome.detail)
        if outcome.kind == "error":
            raise ProviderError(outcome.detail)

    def _batch_call(self, ids: list[str], build: Callable[[str], HttpRequest], method: str) -> dict[str, _Outcome]:
        """One batch request (in a worker thread): an outcome per id."""
        outcomes: dict[str, _Outcome] = {}

        def callback(request_id: str, response: dict, exception: Exception | None) -> None:
            if exception is None:
                outcomes[request_id] = _Outcome("ok", data=response)
            elif isinstance(exception, HttpError):
                outcomes[request_id] = _classify(exception)
            else:
                outcomes[request_id] = _Outcome("retry", detail=type(exception).__name__)

        batch = self.service.new_batch_http_request(callback=callback)
        for message_id in ids:
            batch.add(self._authorize(build(message_id)), request_id=message_id)
        entry = self.pacer.acquire(METHOD_COSTS.get(method, 5) * len(ids))
        try:
            self.requests_made += 1
            batch.execute(http=self._http())
        except HttpError as exc:
            outcome = _classify(exc)
            return {i: outcome for i in ids}
        except (TimeoutError, httplib2.HttpLib2Error, OSError) as exc:
            return {i: _Outcome("retry", detail=type(exc).__name__) for i in ids}
        finally:
            self.pacer.release(entry)
        for message_id in ids:
            outcomes.setdefault(message_id, _Outcome("retry", detail="missing batch part"))
        return outcomes

    def _fetch_stream(
        self, ids: Sequence[str], *, build: Callable[[str], HttpRequest], method: str = "messages.get"
    ) -> Iterator[list[tuple[str, dict | None]]]:
        """Run ``build(id)`` for every id in bounded batches with bounded concurrency.

        Yields lists of (id, response) as batches complete; response None means the message is gone (404).
        Throttled or failed ids are retried with backoff; nothing is dropped.
        """
        self._ensure_token()
        queue: deque[list[str]] = deque(list(ids[i : i + self.batch_size]) for i in range(0, len(ids), self.batch_size))
        attempts: dict[str, int] = {}
        refreshed = False
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="gmail-fetch")
        inflight: dict[Future, list[str]] = {}
        try:
            while queue or inflight:
                # More batches queued than threads: workers keep fetching while this thread parses and stores.
                while queue and len(inflight) < self.concurrency * 4:
                    chunk = queue.popleft()
                    inflight[pool.submit(self._batch_call, chunk, build, method)] = chunk
                done, _ = wait(list(inflight), timeout=20.0, return_when=FIRST_COMPLETED)
                if not done:
                    self.local.heartbeat()
                    continue
                ready: list[tuple[str, dict | None]] = []
                retry: list[str] = []
                unauthorized = False
                throttled = False
                longest = 0.0
                for future in done:
                    chunk = inflight.pop(future)
                    for message_id, outcome in future.result().items():
                        if outcome.kind == "ok":
                            ready.append((message_id, outcome.data))
                        elif outcome.kind == "gone":
                            ready.append((message_id, None))
                        elif outcome.kind == "unauthorized":
                            unauthorized = True
                            retry.append(message_id)
                        elif outcome.kind in ("error", "denied", "no_mailbox"):
                            self._raise_for(outcome)
                        else:
                            attempts[message_id] = attempts.get(message_id, 0) + 1
                            delay = _backoff(attempts[message_id], outcome.delay)
                            budget = MAX_THROTTLED_ATTEMPTS if outcome.throttled else MAX_ATTEMPTS
                            throttled = throttled or outcome.throttled
                            if attempts[message_id] >= budget or delay > MAX_INLINE_WAIT:
                                raise ProviderError(
                                    f"Gmail is throttling or failing ({outcome.detail}); the sync will resume later.",
                                    retry_after=delay,
                                )
                            longest = max(longest, delay)
                            retry.append(message_id)
                if throttled:
                    self.pacer.throttled()
                elif ready:
                    self.pacer.succeeded()
                if unauthorized:
                    if refreshed:
                        raise ProviderError("Gmail keeps rejecting Mailhub's access token. Will retry later.")
                    self._ensure_token(force=True)
                    refreshed = True
                if retry or longest:
                    # Throttled ids go back in the queue after a pause that holds every request of the user.
                    logger.debug("Gmail: retry %d ids after %.2fs (limit %.0f)", len(retry), longest, self.pacer.limit)
                    self.pacer.pause(longest)
                    for start in range(0, len(retry), self.batch_size):
                        queue.append(retry[start : start + self.batch_size])
                if ready:
                    yield ready
        finally:
            for future in inflight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    # --- labels -----------------------------------------------------------------------------------
    def _labels_sync(self) -> None:
        response = self._execute(lambda: self.service.users().labels().list(userId="me"), method="labels.list")
        folders: list[RemoteFolder] = []
        for label in response.get("labels", []):
            label_id = label["id"]
            if label_id in NOT_FOLDERS or label_id.startswith("CATEGORY_"):
                continue
            role, name = SYSTEM_FOLDERS.get(label_id, ("user", label.get("name") or label_id))
            if label.get("type") == "system" and label_id not in SYSTEM_FOLDERS:
                continue
            folders.append(RemoteFolder(remote_id=label_id, name=name, role=role))
        self._folders = self.local.folders_replace(folders)

    def _folders_for(self, label_ids: Sequence[str]) -> list[str]:
        unknown = [
            label
            for label in label_ids
            if label not in self._folders and label not in NOT_FOLDERS and not label.startswith("CATEGORY_")
        ]
        if unknown:
            self._labels_sync()
        return [label for label in label_ids if label in self._folders]

    def _incoming(self, data: dict) -> RemoteMessage:
        labels = data.get("labelIds") or []
        internal = data.get("internalDate")
        return RemoteMessage(
            remote_id=data["id"],
            raw=_b64decode(data.get("raw") or ""),
            folders=self._folders_for(labels),
            thread_key=data.get("threadId") or None,
            internal_date=datetime.fromtimestamp(int(internal) / 1000, UTC) if internal else None,
            **_label_flags(labels),
        )

    def _state(self, data: dict) -> RemoteState:
        labels = data.get("labelIds") or []
        return RemoteState(folders=self._folders_for(labels), **_label_flags(labels))

    def _get_raw(self, message_id: str) -> HttpRequest:
        return self.service.users().messages().get(userId="me", id=message_id, format="raw")

    def _get_minimal(self, message_id: str) -> HttpRequest:
        return self.service.users().messages().get(userId="me", id=message_id, format="minimal")

    def _batch_modify(self, body: dict) -> HttpRequest:
        return self.service.users().messages().batchModify(userId="me", body=body)

    # --- full sync --------------------------------------------------------------------------------
    @staticmethod
    def _query(since: date | None) -> str | None:
        if since is None:
            return None
        start = datetime.combine(since, dt_time.min, tzinfo=UTC)
        return f"after:{int(start.timestamp())}"

    def _list_page(
        self, *, q: str | None, page_token: str | None, fields: str | None = None, max_attempts: int = MAX_ATTEMPTS
    ) -> dict:
        def build() -> HttpRequest:
            kwargs: dict[str, Any] = {"userId": "me", "maxResults": LIST_PAGE_SIZE, "includeSpamTrash": True}
            if q:
                kwargs["q"] = q
            if page_token:
                kwargs["pageToken"] = page_token
            return self.service.users().messages().list(**kwargs)

        return self._execute(build, method="messages.list", max_attempts=max_attempts)

    def full_sync(self) -> None:
        """Fetch the mailbox (within the sync range), resuming where an interrupted run stopped."""
        self._ensure_token()
        position = self.local.position()
        resume = position.resume
        if not resume.get("history_id"):
            profile = self._execute(lambda: self.service.users().getProfile(userId="me"), method="getProfile")
            resume = {
                "history_id": str(profile["historyId"]),
                "page_token": "",
                "page_done": [],
                "done": 0,
                "reconcile": self.local.count() > 0,
            }
            total = int(profile.get("messagesTotal") or 0) if position.since is None else 0
            self.local.progress(done=0, total=total, resume=resume)
        self._labels_sync()
        q = self._query(position.since)
        done = int(resume.get("done", 0))
        while True:
            try:
                page = self._list_page(q=q, page_token=resume["page_token"] or None)
            except _Gone:
                if not resume["page_token"]:
                    raise ProviderError("Gmail could not list this mailbox. Will retry later.") from None
                resume.update(page_token="", page_done=[])  # an expired page token: list again, skipping stored
                continue
            ids = [m["id"] for m in page.get("messages", [])]
            if not resume["page_token"]:
                estimate = max(int(page.get("resultSizeEstimate") or 0), len(ids))
                if estimate > position.progress_total:
                    self.local.progress(total=estimate)
            done = self._full_sync_page(ids=ids, resume=resume, done=done)
            next_token = page.get("nextPageToken")
            if not next_token:
                break
            done = self._counted(resume, done)
            resume.update(page_token=next_token, page_done=[], done=done)
            self.local.progress(resume=resume, done=done, total=self._total_at_least(done))
        if resume.get("reconcile"):
            self._reconcile_deletions(q=q, since=position.since)
        self.local.full_sync_finished(cursor=resume["history_id"], done=self._counted(resume, done))
        # Catch up with what changed while the full sync ran (or while a killed run lay dead).
        self.incremental_sync()
        stored = self.local.count(since=position.since)  # a finished sync's counter: what is stored in range
        self.local.progress(done=stored, total=stored)

    def _counted(self, resume: dict, done: int) -> int:
        """The progress so far (``progress_done``), never less than what an earlier report said.

        A first sync counts the messages stored: the store is the truth, whatever a killed run left behind
        or a shifting listing showed twice. A resync of a stored mailbox (``reconcile``) counts the messages
        it has checked or stored (``done``, kept in the resume point with the page's ids).
        """
        if resume.get("reconcile"):
            return done
        return self.local.count()

    def _total_at_least(self, done: int) -> int:
        return max(self.local.position().progress_total, done)

    def _full_sync_page(self, *, ids: list[str], resume: dict, done: int) -> int:
        page_done = set(resume.get("page_done") or [])
        todo = [i for i in ids if i not in page_done]
        stored = self.local.stored(todo)
        if resume.get("reconcile"):
            # After an expired history, stored messages' labels may be stale: refresh them (cheaply).
            minimal = [i for i in todo if i in stored]
            for results in self._fetch_stream(minimal, build=self._get_minimal):
                states = {mid: self._state(data) for mid, data in results if data is not None}
                self.local.states_save(states)
                self.local.messages_delete([mid for mid, data in results if data is None])
                page_done.update(mid for mid, _ in results)
                done += len(states)  # checked and still there; the gone ones were deleted
                resume.update(page_done=sorted(page_done), done=done)
                self.local.progress(done=done, resume=resume)
        else:
            # Stored by an interrupted run of this same sync: changes since are in the history.
            page_done.update(stored)
            done += len([i for i in todo if i in stored])
        new = [i for i in todo if i not in stored]
        pending: list[RemoteMessage] = []
        pending_ids: list[str] = []
        for results in self._fetch_stream(new, build=self._get_raw):
            for message_id, data in results:
                pending_ids.append(message_id)
                if data is not None:
                    pending.append(self._incoming(data))
            if len(pending_ids) >= STORE_GROUP:
                done = self._store_group(pending, pending_ids, page_done, resume, done)
                pending, pending_ids = [], []
        if pending_ids:
            done = self._store_group(pending, pending_ids, page_done, resume, done)
        return done

    def _store_group(
        self, items: list[RemoteMessage], ids: list[str], page_done: set[str], resume: dict, done: int
    ) -> int:
        self.local.messages_save(items)
        page_done.update(ids)
        done = self._counted(resume, done + len(items))  # ids gone meanwhile (404) were not stored
        resume.update(page_done=sorted(page_done), done=done)
        self.local.progress(done=done, resume=resume, total=self._total_at_least(done))
        return done

    def _reconcile_deletions(self, *, q: str | None, since: date | None) -> None:
        """Delete stored messages the mailbox no longer has (within the sync range)."""
        listed: set[str] = set()
        token: str | None = None
        while True:
            page = self._list_page(q=q, page_token=token)
            listed.update(m["id"] for m in page.get("messages", []))
            token = page.get("nextPageToken")
            if not token:
                break
        self.local.messages_delete(self.local.remote_ids(since=since) - listed)

    # --- incremental sync -------------------------------------------------------------------------
    def incremental_sync(self) -> None:
        """Apply the mailbox's history since the stored historyId; an expired one starts a full resync."""
        self._ensure_token()
        cursor = self.local.position().cursor
        if not cursor:
            self.full_sync()
            return
        if not self._folders:  # (a full sync that ends here has just listed them)
            # History tells of no label deleted or renamed, so one labels.list per sync keeps folders true.
            self._labels_sync()
        records: list[dict] = []
        token: str | None = None
        latest = cursor
        while True:

            def build(page_token: str | None = token) -> HttpRequest:
                kwargs: dict[str, Any] = {"userId": "me", "startHistoryId": cursor, "maxResults": 500}
                if page_token:
                    kwargs["pageToken"] = page_token
                return self.service.users().history().list(**kwargs)

            try:
                response = self._execute(build, method="history.list")
            except _Gone:
                logger.info("History of account %s expired; starting a full resync", self.account.pk)
                self.local.full_sync_restart()
                self.full_sync()
                return
            records.extend(response.get("history", []))
            latest = str(response.get("historyId") or latest)
            token = response.get("nextPageToken")
            if not token:
                break
        if records:
            self._apply_history(records)
        if latest != cursor:
            self.local.cursor_save(latest)

    def _apply_history(self, records: list[dict]) -> None:
        added: dict[str, None] = {}
        deleted: set[str] = set()
        deltas: list[tuple[str, list[str], list[str]]] = []
        for record in records:
            for item in record.get("messagesAdded", []):
                message_id = item["message"]["id"]
                added[message_id] = None
                deleted.discard(message_id)
            for item in record.get("messagesDeleted", []):
                message_id = item["message"]["id"]
                deleted.add(message_id)
                added.pop(message_id, None)
            for item in record.get("labelsAdded", []):
                deltas.append((item["message"]["id"], item.get("labelIds", []), []))
            for item in record.get("labelsRemoved", []):
                deltas.append((item["message"]["id"], [], item.get("labelIds", [])))
        if deleted:
            self.local.messages_delete(deleted)
        if not self._folders:
            self._folders = self.local.folders()
        stored = self.local.stored(added)
        fetch = [i for i in added if i not in stored]
        for results in self._fetch_stream(fetch, build=self._get_raw):
            self.local.messages_save([self._incoming(data) for _, data in results if data is not None])
        fetched = set(fetch)
        for message_id, add, remove in deltas:
            if message_id in deleted or message_id in fetched:
                continue  # fetched messages came with their current labels
            self._labels_change(message_id=message_id, add=add, remove=remove)

    def _labels_change(self, *, message_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        flags: dict[str, bool] = {}
        for label, value in (("UNREAD", False), ("STARRED", True), ("DRAFT", True)):
            key = {"UNREAD": "is_read", "STARRED": "is_starred", "DRAFT": "is_draft"}[label]
            if label in add:
                flags[key] = value
            if label in remove:
                flags[key] = not value
        if flags:
            self.local.flags_set([message_id], **flags)
        add_folders, remove_folders = self._folders_for(add), self._folders_for(remove)
        if add_folders or remove_folders:
            self.local.folders_change([message_id], add=add_folders, remove=remove_folders)

    # --- write-back -------------------------------------------------------------------------------
    def apply_changes(self, *, messages: Sequence[LocalMessage], change: MessageChange) -> None:
        """Write a user's change to Gmail: batchModify for labels and flags, trash/untrash per message."""
        ids = [m.remote_id for m in messages]
        if not ids:
            return
        kind = change.kind
        if kind == ChangeKind.DELETE_FOREVER:
            raise ProviderError("Gmail deletes for good only with the full-mail scope, which Mailhub does not ask for")
        if kind in (ChangeKind.TRASH, ChangeKind.UNTRASH):
            verb = "trash" if kind == ChangeKind.TRASH else "untrash"

            def build(message_id: str) -> HttpRequest:
                return getattr(self.service.users().messages(), verb)(userId="me", id=message_id)

            for _ in self._fetch_stream(ids, build=build, method=f"messages.{verb}"):
                pass
            return
        add, remove = self._change_labels(change)
        if not add and not remove:
            return
        for start in range(0, len(ids), 1000):
            body = {"ids": ids[start : start + 1000], "addLabelIds": add, "removeLabelIds": remove}
            try:
                self._execute(
                    functools.partial(self._batch_modify, body),
                    method="messages.batchModify",
                )
            except _Gone:
                continue

    @staticmethod
    def _change_labels(change: MessageChange) -> tuple[list[str], list[str]]:
        target = change.folder_remote_id
        return {
            ChangeKind.READ: ([], ["UNREAD"]),
            ChangeKind.UNREAD: (["UNREAD"], []),
            ChangeKind.STAR: (["STARRED"], []),
            ChangeKind.UNSTAR: ([], ["STARRED"]),
            ChangeKind.ARCHIVE: ([], ["INBOX"]),
            ChangeKind.UNARCHIVE: (["INBOX"], []),
            ChangeKind.MOVE: ([target], [label for label in ("INBOX", "SPAM") if label != target]),
            ChangeKind.ADD_LABEL: ([target], []),
            ChangeKind.REMOVE_LABEL: ([], [target]),
        }.get(change.kind, ([], []))

    # --- drafts -----------------------------------------------------------------------------------

    def drafts(self) -> list[RemoteDraft]:
        """Every draft (users.drafts.list, 5 units a page of 500): its id and its message's id, its version."""
        found: list[RemoteDraft] = []
        token: str | None = None
        while True:

            def build(page_token: str | None = token) -> HttpRequest:
                return self.service.users().drafts().list(userId="me", maxResults=500, pageToken=page_token)

            response = self._execute(build, method="drafts.list")
            found += [RemoteDraft(item["id"], item["message"]["id"]) for item in response.get("drafts", [])]
            token = response.get("nextPageToken")
            if not token:
                return found

    def draft_get(self, *, draft_id: str) -> DraftContent | None:
        try:
            data = self._execute(
                lambda: self.service.users().drafts().get(userId="me", id=draft_id, format="raw"), method="drafts.get"
            )
        except _Gone:
            return None
        return DraftContent(RemoteDraft(data["id"], data["message"]["id"]), _b64decode(data["message"]["raw"]))

    def draft_save(self, *, raw: bytes, draft_id: str | None, thread_key: str = "") -> RemoteDraft:
        """drafts.update, or drafts.create for a new draft or one deleted at Gmail meanwhile. A create repeated
        after a lost answer leaves a second draft with the same Message-ID, which the app recognises as its own."""
        message: dict[str, Any] = {"raw": base64.urlsafe_b64encode(raw).decode("ascii")}
        if thread_key:
            message["threadId"] = thread_key
        drafts = self.service.users().drafts()
        if draft_id:
            try:
                data = self._execute(
                    lambda: drafts.update(userId="me", id=draft_id, body={"id": draft_id, "message": message}),
                    method="drafts.update",
                )
                return RemoteDraft(data["id"], data["message"]["id"])
            except _Gone:
                pass
        data = self._execute(lambda: drafts.create(userId="me", body={"message": message}), method="drafts.create")
        return RemoteDraft(data["id"], data["message"]["id"])

    def draft_delete(self, *, draft_id: str) -> None:
        with contextlib.suppress(_Gone):
            self._execute(
                lambda: self.service.users().drafts().delete(userId="me", id=draft_id), method="drafts.delete"
            )

    # --- watching ---------------------------------------------------------------------------------

    def watch(self) -> MailboxWatch:
        return HistoryPoll(self, poll_seconds=float(_setting("MAILHUB_GMAIL_POLL_SECONDS", DEFAULT_POLL_SECONDS)))

    def history_moved(self, since: str) -> tuple[bool, str]:
        """Whether the mailbox has history after ``since`` (one history.list of one record: 2 quota units), and
        its current historyId. An expired ``since`` counts as moved (the sync starts over)."""

        if self._history is None:  # built once: making the resource costs more than the request (a watcher asks often)
            self._history = self.service.users().history()
        history = self._history

        def build() -> HttpRequest:
            return history.list(userId="me", startHistoryId=since, maxResults=1)

        try:
            response = self._execute(build, method="history.list", max_attempts=1)
        except _Gone:
            return True, ""
        return bool(response.get("history")), str(response.get("historyId") or since)

    # --- labels -----------------------------------------------------------------------------------

    def folder_create(self, *, name: str) -> RemoteFolder:
        body = {"name": name, "labelListVisibility": "labelShow", "messageListVisibility": "show"}
        data = self._label_call(lambda: self.service.users().labels().create(userId="me", body=body), "labels.create")
        return RemoteFolder(data["id"], data["name"])

    def folder_rename(self, *, folder: LocalFolder, name: str) -> RemoteFolder:
        """labels.patch of the label and of each label nested in it (Gmail nests by "/" in names)."""
        labels = self.service.users().labels()
        prefix = folder.name + "/"
        inside = [f for f in self.local.folders().values() if f.role == "user" and f.name.startswith(prefix)]
        data = self._label_call(
            lambda: labels.patch(userId="me", id=folder.remote_id, body={"name": name}), "labels.patch"
        )
        for child in inside:
            body = {"name": name + "/" + child.name.removeprefix(prefix)}
            patch = functools.partial(labels.patch, userId="me", id=child.remote_id, body=body)
            self._label_call(patch, "labels.patch")
        return RemoteFolder(data["id"], data["name"])

    def folder_delete(self, *, folder: LocalFolder) -> None:
        with contextlib.suppress(_Gone):
            self._label_call(
                lambda: self.service.users().labels().delete(userId="me", id=folder.remote_id), "labels.delete"
            )

    def _label_call(self, build: Callable[[], HttpRequest], method: str) -> dict:
        try:
            return self._execute(build, method=method, max_attempts=3, refused=ErrorCode.FOLDER_REFUSED)
        except _Gone:
            raise ActionRequired("Gmail has no such label (was it deleted?).", code=ErrorCode.FOLDER_REFUSED) from None

    # --- send -------------------------------------------------------------------------------------
    keeps_sent_copy = True  # everything messages.send accepted is in the mailbox, found by rfc822msgid:

    def identities(self) -> list[SenderIdentity]:
        """The account's address and its verified "Send mail as" aliases (users.settings.sendAs.list), with the
        names Gmail puts on them."""
        response = self._execute(
            lambda: self.service.users().settings().sendAs().list(userId="me"), method="settings.sendAs.list"
        )
        return [_identity(item) for item in response.get("sendAs", []) if _send_as_usable(item)]

    def _alias_check(self, address: str) -> None:
        """Gmail sends a From it does not accept from the account's own address, silently: refuse first."""
        try:
            item = self._execute(
                lambda: self.service.users().settings().sendAs().get(userId="me", sendAsEmail=address),
                method="settings.sendAs.get",
            )
        except _Gone:
            item = {}
        if not _send_as_usable(item):
            raise ActionRequired(
                f"Gmail does not accept {address} as a Send-mail-as address", code=ErrorCode.ALIAS_REFUSED
            )

    def send(self, *, outgoing: Outgoing, handoff: Callable[[], None]) -> str:
        """One messages.send of the frozen raw bytes (with the Gmail thread for a reply); files it locally.

        Never repeated here: a lost answer (network error, timeout, 5xx) raises SendUncertain and the outbox
        asks Gmail (:meth:`find_sent`) before anything is sent again. A refused token is the one retry: Gmail
        answered 401 before taking the message.
        """
        if outgoing.from_alias and outgoing.from_alias.lower() != self.account.email.lower():
            self._alias_check(outgoing.from_alias)
        body: dict[str, Any] = {"raw": base64.urlsafe_b64encode(outgoing.raw).decode("ascii")}
        if outgoing.reply_thread_key:
            body["threadId"] = outgoing.reply_thread_key
        self._ensure_token()
        for refreshed in (False, True):
            try:
                response = self._send_once(body, handoff=handoff)
            except HttpError as exc:
                outcome = _classify(exc)
                if outcome.kind == "unauthorized" and not refreshed:
                    self._ensure_token(force=True)
                    continue
                raise self._send_error(outcome) from None
            self._file_sent(outgoing=outgoing, data=response)
            return response["id"]
        raise ProviderError("Gmail keeps rejecting Mailhub's access token. Will retry later.")

    def _send_once(self, body: dict[str, Any], *, handoff: Callable[[], None]) -> dict:
        request = self._authorize(self.service.users().messages().send(userId="me", body=body))
        entry = self.pacer.acquire(METHOD_COSTS["messages.send"])
        try:
            self.requests_made += 1
            handoff()
            return request.execute(http=_SingleShotHttp(self, timeout=TIMEOUT), num_retries=0)
        except (ConnectionRefusedError, socket.gaierror):
            raise ProviderError("Gmail could not be reached; the message will be sent later.") from None
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            raise SendUncertain(
                f"The connection to Gmail broke while it was taking the message ({type(exc).__name__})."
            ) from None
        finally:
            self.pacer.release(entry)

    def _send_error(self, outcome: _Outcome) -> ProviderError:
        """What a refused messages.send means for the outbox (only a 5xx leaves Gmail's side in doubt)."""
        if outcome.kind == "retry" and outcome.throttled:
            self.pacer.throttled()
            return ProviderError(
                f"Gmail is throttling sends ({outcome.detail}).", retry_after=outcome.delay, code=ErrorCode.THROTTLED
            )
        if outcome.kind == "retry":
            return SendUncertain(f"Gmail failed while taking the message ({outcome.detail}).")
        if outcome.kind in ("denied", "no_mailbox"):
            self._raise_for(outcome)  # the account needs its user: ReconnectRequired
        return ActionRequired(outcome.detail or "Gmail refused the message.", detail=outcome.detail)

    def find_sent(self, *, outgoing: Outgoing) -> str | None:
        """The id of ``outgoing`` if Gmail already has it (an earlier attempt went through), else None."""
        if not outgoing.message_id:
            return None
        # Few inline attempts: the outbox asks again later, with backoff, and holds the row meanwhile.
        response = self._list_page(q=f"rfc822msgid:{outgoing.message_id}", page_token=None, max_attempts=2)
        found = response.get("messages") or []
        if not found:
            return None
        data = self._execute(lambda: self._get_minimal(found[0]["id"]), method="messages.get")
        self._file_sent(outgoing=outgoing, data=data)
        return found[0]["id"]

    def file_sent(self, *, outgoing: Outgoing, remote_id: str) -> None:
        """Gmail files what it sends itself; :meth:`send` and :meth:`find_sent` store the local copy."""

    def _file_sent(self, *, outgoing: Outgoing, data: dict) -> None:
        if not self._folders:
            self._folders = self.local.folders()
        labels = data.get("labelIds") or ["SENT"]
        sent = RemoteMessage(
            remote_id=data["id"],
            raw=outgoing.raw,
            folders=self._folders_for(labels),
            is_read=True,
            is_starred="STARRED" in labels,
            thread_key=data.get("threadId") or None,
        )
        self.local.messages_save([sent])


class HistoryPoll:
    """A :class:`providers.base.MailboxWatch` for Gmail: history.list every ``poll_seconds``, from the cursor the
    last sync reached (Gmail's push needs a Pub/Sub topic; polling needs nothing and costs 2 units a look)."""

    def __init__(self, client: GmailClient, *, poll_seconds: float) -> None:
        self.client = client
        self.poll_seconds = poll_seconds
        self.seen = ""
        self._check_at = 0.0

    def open(self) -> None:
        self.seen = self.client.local.position().cursor
        self._check_at = time.monotonic()

    def fileno(self) -> int | None:
        return None

    def check_at(self) -> float:
        return self._check_at

    def changed(self) -> bool:
        if time.monotonic() < self._check_at:
            return False
        self._check_at = time.monotonic() + self.poll_seconds
        if not self.seen:
            self.seen = self.client.local.position().cursor
            return True
        moved, self.seen = self.client.history_moved(self.seen)
        return moved

    def close(self) -> None:
        return None


def _send_as_usable(item: dict) -> bool:
    """The account's own address, or an alias Gmail has verified (an unverified one would be replaced)."""
    return bool(item) and (item.get("isPrimary") or item.get("verificationStatus") == "accepted")


def _identity(item: dict) -> SenderIdentity:
    return SenderIdentity(
        address=item["sendAsEmail"],
        name=item.get("displayName", ""),
        is_primary=bool(item.get("isPrimary")),
        is_default=bool(item.get("isDefault")),
        reply_to=item.get("replyToAddress", ""),
    )
