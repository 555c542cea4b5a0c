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

import logging
import random
import time
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import MailAccount
from accounts.services import account_mark_needs_reconnect, providers_off
from mailbox.drafts import drafts_fingerprint, drafts_sync
from mailbox.identities import identities_refresh_if_due
from mailbox.local import account_client
from mailbox.models import SyncState
from mailbox.synclock import (
    SyncLockLost,
    lock_acquire,
    lock_expires_in,
    lock_kept,
    lock_release,
    sync_state_get,
)
from providers.errors import ErrorCode, ProviderError, ReconnectRequired

logger = logging.getLogger(__name__)

DEFAULT_SYNC_DAYS = 90
# A sync beat queued that has not started after this long is taken for lost (a broker flushed) and queued again.
QUEUED_GRACE = timedelta(minutes=10)
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 3600.0


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
    again: bool = False  # a sync was asked for while this one ran: run another now


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
    owner = lock_acquire(account=account)
    if owner is None:
        # Ask the running sync for another when it ends; it looks after releasing its lock, so look once more
        # here: if the lock is free now, the holder may have looked before the request was written.
        SyncState.objects.filter(pk=state.pk).update(sync_requested_at=timezone.now())
        owner = lock_acquire(account=account)
    if owner is None:
        expires_in = lock_expires_in(account=account)
        return SyncResult(SyncOutcome.BUSY, retry_after=None if expires_in is None else expires_in + 1.0)
    started = time.monotonic()
    started_at = timezone.now()
    try:
        with lock_kept(account_id=account.pk, owner=owner):
            _sync_run(account=account, state=state)
    except SyncLockLost:
        logger.warning("Sync of account %s stopped: another worker took its lock over", account_id)
        return SyncResult(SyncOutcome.LOST)
    except ReconnectRequired as exc:
        account_mark_needs_reconnect(account=account, reason=exc.code)
        lock_release(account=account, owner=owner, **_error_fields(exc.code, str(exc), SyncState.Status.STOPPED))
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
    lock_release(
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
    again = SyncState.objects.filter(pk=state.pk, sync_requested_at__gt=started_at).exists()
    return SyncResult(SyncOutcome.OK, again=again)


def _sync_run(*, account: MailAccount, state: SyncState) -> None:
    client = account_client(account)
    state.refresh_from_db()
    identities_refresh_if_due(account=account, client=client, state=state)
    drafts_before = drafts_fingerprint(account=account)
    if state.stage == SyncState.Stage.INCREMENTAL:
        client.incremental_sync()
    else:
        if state.stage == SyncState.Stage.PENDING:
            SyncState.objects.filter(pk=state.pk).update(stage=SyncState.Stage.FULL)
        client.full_sync()
        SyncState.objects.filter(pk=state.pk).update(stage=SyncState.Stage.INCREMENTAL, resume={})
    drafts_sync(account=account, client=client, provider_changed=drafts_fingerprint(account=account) != drafts_before)


def _error_fields(code: str, detail: str, status: str) -> dict:
    """The sync state's record of a failure: its code (what users read) and the detail (for logs and admins)."""
    return {"status": status, "last_error_code": code, "last_error": detail[:500], "last_error_at": timezone.now()}


def _backoff_record(*, account: MailAccount, owner: str, code: str, detail: str, retry_after: float | None) -> float:
    """Release the lock with the failure recorded and the next attempt pushed back; returns the delay."""
    failures = (SyncState.objects.filter(account=account).values_list("failure_count", flat=True).first() or 0) + 1
    delay = _backoff_seconds(failures=failures, retry_after=retry_after)
    lock_release(
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
    transaction.on_commit(lambda: tasks.account_sync_enqueue(account.pk))


def account_connected(*, account: MailAccount, created: bool, since: date | None) -> None:
    """After a mailbox was connected (``created``) or connected again: start its first sync, or resume it."""
    if created:
        account_sync_start(account=account, since=since)
    else:
        account_reconnected(account=account)


def account_reconnected(*, account: MailAccount) -> None:
    """A user connected the mailbox again: the failure that stopped its sync is over, so it is no longer shown,
    and a sync is queued at once (a running sync keeps its own state)."""
    sync_state_get(account=account)
    SyncState.objects.filter(account=account).exclude(status=SyncState.Status.RUNNING).update(
        status=SyncState.Status.IDLE, last_error="", last_error_code="", failure_count=0, next_attempt_at=None
    )
    account_sync_queue(account=account)


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
    """Accounts beat should sync now: connected, provider on, not running, not waiting out a backoff, and not
    watched (``mailbox.watch``) unless their last sync is MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS old.

    A STOPPED sync state does not exclude an account that is connected again (its status is active).
    """
    now = timezone.now()
    busy = Q(sync_state__lock_owner__gt="") & Q(sync_state__lock_expires_at__gt=now)
    waiting = Q(sync_state__next_attempt_at__gt=now)
    watched_interval = timedelta(seconds=float(settings.MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS))
    watched = (
        Q(sync_state__watched_since__isnull=False)
        & Q(sync_state__watch_expires_at__gt=now)
        & Q(sync_state__last_success_at__gt=now - watched_interval)
    )
    not_started = Q(sync_state__started_at__isnull=True) | Q(sync_state__started_at__lt=F("sync_state__sync_queued_at"))
    queued = Q(sync_state__sync_queued_at__gt=now - QUEUED_GRACE) & not_started
    return list(
        MailAccount.objects.filter(status=MailAccount.Status.ACTIVE)
        .exclude(provider__in=providers_off())
        .exclude(busy)
        .exclude(waiting)
        .exclude(watched)
        .exclude(queued)
        .values_list("pk", flat=True)
    )


def accounts_queued(account_ids: list[int]) -> set[int]:
    """Record that beat queued a sync of these accounts (not queued again until it started); returns those of
    them still in their first sync (their syncs go to the first-sync queue)."""
    states = SyncState.objects.filter(account_id__in=account_ids)
    states.update(sync_queued_at=timezone.now())
    return set(states.exclude(stage=SyncState.Stage.INCREMENTAL).values_list("account_id", flat=True))
