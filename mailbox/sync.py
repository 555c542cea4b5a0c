"""The sync engine: when an account syncs, under which lock, and what becomes of a provider's failure.

:func:`account_sync` runs one sync of one account under a lock kept in its SyncState (never two at once).
The lock lives for MAILHUB_SYNC_LOCK_TTL_SECONDS (60 s) and a heartbeat thread renews it every quarter of
that while the sync runs, however long one step takes: a worker that dies (SIGKILL, OOM, power) leaves a
lock that expires within a minute, after which the next sync resumes where it stopped.

How a provider's failure ends (``providers.errors``), the same for every provider:

- ReconnectRequired (dead grant or password, no mailbox, access refused): the account is marked for
  reconnecting (:func:`accounts.services.account_mark_needs_reconnect`) and the sync STOPPED, not retried;
- any other ProviderError: ERROR with a backoff (the provider's Retry-After when it gave one; the longest
  backoff when it is not retryable), then beat tries again;
- anything else (our own bug): logged with its traceback, then as above.

The sync state keeps the error's code; users read the words ``providers.errors.error_message`` picks.
Write-back is in :mod:`mailbox.writeback`, the outbox in :mod:`mailbox.outbox`.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import MailAccount
from accounts.services import account_mail_client, account_mark_needs_reconnect
from mailbox.models import SyncState
from providers.errors import ErrorCode, ProviderError, ReconnectRequired

logger = logging.getLogger(__name__)

DEFAULT_SYNC_DAYS = 90
DEFAULT_LOCK_TTL_SECONDS = 60.0  # a dead worker's lock is free after this; a live one renews it (see _LockHeartbeat)
HEARTBEATS_PER_TTL = 4  # so three renewals in a row may fail (e.g. a write lock held for a while) before it lapses
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 3600.0

_lock_owner: contextvars.ContextVar[str] = contextvars.ContextVar("mailhub_sync_lock_owner", default="")
_heartbeat: contextvars.ContextVar[_LockHeartbeat | None] = contextvars.ContextVar(
    "mailhub_sync_heartbeat", default=None
)


class _Default:
    pass


DEFAULT_SINCE = _Default()


class SyncOutcome(StrEnum):
    OK = "ok"
    BUSY = "busy"  # another sync holds the lock
    LOST = "lost"  # this sync's lock was taken over (its worker was taken for dead)
    STOPPED = "stopped"  # the account waits for its user to reconnect it
    RETRY = "retry"  # a provider failure: try again after ``retry_after``
    ERROR = "error"  # our own code crashed; beat tries again after a backoff
    MISSING = "missing"  # the account no longer exists


@dataclass(frozen=True)
class SyncResult:
    """How one :func:`account_sync` call ended; ``retry_after`` (seconds) is set when worth retrying.

    For BUSY ``retry_after`` is when the holder's lock expires unless renewed: the time to look again in
    case its holder is dead.
    """

    outcome: SyncOutcome
    retry_after: float | None = None


class SyncLockLost(Exception):  # noqa: N818 - it names what happened
    """This sync's lock lapsed and another sync took it (this worker was taken for dead): stop writing."""


# --- Sync state ---------------------------------------------------------------------------------


def sync_state_get(*, account: MailAccount) -> SyncState:
    state, _ = SyncState.objects.get_or_create(account=account)
    return state


def sync_state_progress(
    *,
    account: MailAccount,
    done: int | None = None,
    total: int | None = None,
    resume: dict | None = None,
    cursor: str | None = None,
) -> None:
    """Record a sync's progress (and where to resume it).

    Sync engines call this after each batch they have stored, so a crash loses at most one batch of work.
    Raises SyncLockLost when the running sync's lock was taken over (then nothing is written).
    """
    values: dict = {}
    if done is not None:
        values["progress_done"] = done
    if total is not None:
        values["progress_total"] = total
    if resume is not None:
        values["resume"] = resume
    if cursor is not None:
        values["cursor"] = cursor
    if not values:
        return
    rows = SyncState.objects.filter(account=account)
    owner = _lock_owner.get()
    if owner:
        rows = rows.filter(lock_owner=owner)  # a sync that lost its lock must not write over its successor's
    if not rows.update(**values) and owner:
        raise SyncLockLost


def sync_lock_heartbeat(*, account: MailAccount) -> None:
    """For a sync engine in a long wait: stop at once if this sync's lock was lost meanwhile.

    The lock itself is kept alive by the heartbeat thread (:class:`_LockHeartbeat`), whatever the sync does.
    """
    heartbeat = _heartbeat.get()
    if heartbeat is not None and heartbeat.lost.is_set():
        raise SyncLockLost


def sync_lock_ttl() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "MAILHUB_SYNC_LOCK_TTL_SECONDS", DEFAULT_LOCK_TTL_SECONDS)))


def _lock_acquire(*, account: MailAccount) -> str | None:
    owner = uuid.uuid4().hex
    now = timezone.now()
    got = (
        SyncState.objects.filter(account=account)
        .filter(Q(lock_owner="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now))
        .update(
            lock_owner=owner, lock_expires_at=now + sync_lock_ttl(), status=SyncState.Status.RUNNING, started_at=now
        )
    )
    return owner if got else None


def _lock_renew(*, account_id: int, owner: str) -> bool:
    """Push the lock's expiry one TTL ahead; False if ``owner`` no longer holds it."""
    return bool(
        SyncState.objects.filter(account_id=account_id, lock_owner=owner).update(
            lock_expires_at=timezone.now() + sync_lock_ttl()
        )
    )


def _lock_release(*, account: MailAccount, owner: str, **values) -> None:
    SyncState.objects.filter(account=account, lock_owner=owner).update(lock_owner="", lock_expires_at=None, **values)


def _lock_expires_in(*, account: MailAccount) -> float | None:
    """Seconds until the account's current lock expires unless its holder renews it (None: not locked)."""
    expires = SyncState.objects.filter(account=account).values_list("lock_expires_at", flat=True).first()
    if expires is None:
        return None
    return max((expires - timezone.now()).total_seconds(), 0.0)


class _LockHeartbeat:
    """A thread that renews a running sync's lock every TTL / HEARTBEATS_PER_TTL until stopped.

    A thread rather than renewals from the sync's own progress reports: a sync can spend minutes in one
    step (a provider's Retry-After, one big fetch, storing a huge message) and must not lose its lock
    there, while a dead process renews nothing. The thread has its own database connection (Django's are
    per thread) and closes it on the way out. A renewal that fails on the database is tried again at
    the next beat (SQLite: the write waits out the sync's own transactions, up to its timeout); one that
    finds the lock taken sets ``lost`` and ends, and the sync stops at its next progress report.
    """

    def __init__(self, *, account_id: int, owner: str) -> None:
        self.account_id = account_id
        self.owner = owner
        self.interval = sync_lock_ttl().total_seconds() / HEARTBEATS_PER_TTL
        self.lost = threading.Event()
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sync-lock-{account_id}", daemon=True)

    def start(self) -> _LockHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        # Bounded: a renewal stuck on the database must not hold up the sync's end (its UPDATE is
        # conditional on the owner, so landing after the release changes nothing).
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    renewed = _lock_renew(account_id=self.account_id, owner=self.owner)
                except DatabaseError as exc:
                    logger.warning("Could not renew the sync lock of account %s (%s)", self.account_id, exc)
                    continue
                if not renewed:
                    if not self._stop.is_set():
                        logger.warning("Sync of account %s lost its lock to another worker", self.account_id)
                        self.lost.set()
                    return
                self.renewals += 1
        finally:
            connections.close_all()  # this thread's own connections


def _backoff_seconds(*, failures: int, retry_after: float | None) -> float:
    if retry_after is not None and retry_after > 0:
        return float(retry_after)
    delay = min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


def account_sync(*, account_id: int) -> SyncResult:
    """Run one sync of the account: the first (full) sync until it has finished, then incremental ones.

    Never runs two syncs of one account at once; a provider's failure ends as the module docstring says.
    """
    account = MailAccount.objects.filter(pk=account_id).first()
    if account is None:
        return SyncResult(SyncOutcome.MISSING)
    state = sync_state_get(account=account)
    if account.needs_reconnect:
        SyncState.objects.filter(pk=state.pk).update(
            status=SyncState.Status.STOPPED, last_error_code=account.status_reason or ErrorCode.ACCESS_REVOKED
        )
        return SyncResult(SyncOutcome.STOPPED)
    owner = _lock_acquire(account=account)
    if owner is None:
        expires_in = _lock_expires_in(account=account)
        return SyncResult(SyncOutcome.BUSY, retry_after=None if expires_in is None else expires_in + 1.0)
    token = _lock_owner.set(owner)
    heartbeat = _LockHeartbeat(account_id=account.pk, owner=owner).start()
    heartbeat_token = _heartbeat.set(heartbeat)
    started = time.monotonic()
    try:
        _sync_run(account=account, state=state)
    except SyncLockLost:
        logger.warning("Sync of account %s stopped: another worker took its lock over", account_id)
        return SyncResult(SyncOutcome.LOST)
    except ReconnectRequired as exc:
        account_mark_needs_reconnect(account=account, reason=exc.code)
        _lock_release(account=account, owner=owner, **_error_fields(exc.code, str(exc), SyncState.Status.STOPPED))
        return SyncResult(SyncOutcome.STOPPED)
    except ProviderError as exc:
        retry_after = exc.retry_after if exc.retryable else BACKOFF_MAX_SECONDS
        delay = _backoff_record(account=account, owner=owner, code=exc.code, detail=str(exc), retry_after=retry_after)
        logger.warning("Sync of account %s failed (%s: %s); retrying in %.0fs", account_id, exc.code, exc, delay)
        return SyncResult(SyncOutcome.RETRY, retry_after=delay)
    except Exception as exc:
        logger.exception("Sync of account %s crashed", account_id)
        detail = f"{type(exc).__name__} (see the worker's log)"
        _backoff_record(account=account, owner=owner, code=ErrorCode.UNEXPECTED, detail=detail, retry_after=None)
        return SyncResult(SyncOutcome.ERROR)
    finally:
        heartbeat.stop()
        _heartbeat.reset(heartbeat_token)
        _lock_owner.reset(token)
    _lock_release(
        account=account,
        owner=owner,
        status=SyncState.Status.IDLE,
        last_success_at=timezone.now(),
        last_error="",
        last_error_code="",
        failure_count=0,
        next_attempt_at=None,
        last_duration_ms=int((time.monotonic() - started) * 1000),
    )
    return SyncResult(SyncOutcome.OK)


def _sync_run(*, account: MailAccount, state: SyncState) -> None:
    client = account_mail_client(account=account)
    state.refresh_from_db()
    if state.stage == SyncState.Stage.INCREMENTAL:
        client.incremental_sync()
        return
    if state.stage == SyncState.Stage.PENDING:
        SyncState.objects.filter(pk=state.pk).update(stage=SyncState.Stage.FULL)
    client.full_sync()
    SyncState.objects.filter(pk=state.pk).update(stage=SyncState.Stage.INCREMENTAL, resume={})


def _error_fields(code: str, detail: str, status: str) -> dict:
    """The sync state's record of a failure: its code (what users read) and the detail (for logs and admins)."""
    return {"status": status, "last_error_code": code, "last_error": detail[:500], "last_error_at": timezone.now()}


def _backoff_record(*, account: MailAccount, owner: str, code: str, detail: str, retry_after: float | None) -> float:
    """Release the lock with the failure recorded and the next attempt pushed back; returns the delay."""
    failures = (SyncState.objects.filter(account=account).values_list("failure_count", flat=True).first() or 0) + 1
    delay = _backoff_seconds(failures=failures, retry_after=retry_after)
    _lock_release(
        account=account,
        owner=owner,
        failure_count=failures,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        **_error_fields(code, detail, SyncState.Status.ERROR),
    )
    return delay


def account_sync_queue(*, account: MailAccount) -> None:
    """ "Sync now": queue a sync of ``account`` once the current transaction commits."""
    from mailbox import tasks

    sync_state_get(account=account)
    transaction.on_commit(lambda: tasks.account_sync.delay(account.pk))


def default_sync_since() -> date:
    return timezone.localdate() - timedelta(days=DEFAULT_SYNC_DAYS)


def account_sync_start(*, account: MailAccount, since: date | None | _Default = DEFAULT_SINCE) -> SyncState:
    """Set how far back to sync (default: the last 90 days; None: everything) and queue the first sync.

    On an account that has synced before, this starts a full sync again with the new range, which
    reconciles with what is stored.
    """
    state = sync_state_get(account=account)
    state.sync_since = default_sync_since() if isinstance(since, _Default) else since
    state.stage = SyncState.Stage.PENDING
    state.status = SyncState.Status.IDLE
    state.resume = {}
    state.progress_done = state.progress_total = 0
    state.failure_count = 0
    state.next_attempt_at = None
    state.last_error = state.last_error_code = ""
    state.save()
    account_sync_queue(account=account)
    return state


def accounts_due_for_sync() -> list[int]:
    """Accounts beat should sync now: connected, not running, not waiting out a backoff.

    A STOPPED sync state does not exclude an account that is connected again (its status is active).
    """
    now = timezone.now()
    busy = Q(sync_state__lock_owner__gt="") & Q(sync_state__lock_expires_at__gt=now)
    waiting = Q(sync_state__next_attempt_at__gt=now)
    return list(
        MailAccount.objects.filter(status=MailAccount.Status.ACTIVE)
        .exclude(busy)
        .exclude(waiting)
        .values_list("pk", flat=True)
    )
