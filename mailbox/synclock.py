"""The sync lock: one sync of an account at a time, and the state writes made under it.

:func:`lock_acquire` takes the lock kept in the account's SyncState; it lives for MAILHUB_SYNC_LOCK_TTL_SECONDS
(60 s) and :class:`LockHeartbeat` renews it every quarter of that while the sync runs, however long one step
takes: a worker that dies (SIGKILL, OOM, power) leaves a lock that expires within a minute, after which the
next sync resumes where it stopped. Progress written by a sync that lost its lock is refused (SyncLockLost).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from accounts.models import MailAccount
from mailbox.models import SyncState

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TTL_SECONDS = 60.0  # a dead worker's lock is free after this; a live one renews it (see LockHeartbeat)
HEARTBEATS_PER_TTL = 4  # so three renewals in a row may fail (e.g. a write lock held for a while) before it lapses

_lock_owner: contextvars.ContextVar[str] = contextvars.ContextVar("mailhub_sync_lock_owner", default="")
_heartbeat: contextvars.ContextVar[LockHeartbeat | None] = contextvars.ContextVar(
    "mailhub_sync_heartbeat", default=None
)


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

    The lock itself is kept alive by the heartbeat thread (:class:`LockHeartbeat`), whatever the sync does.
    """
    heartbeat = _heartbeat.get()
    if heartbeat is not None and heartbeat.lost.is_set():
        raise SyncLockLost


def sync_lock_ttl() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "MAILHUB_SYNC_LOCK_TTL_SECONDS", DEFAULT_LOCK_TTL_SECONDS)))


def lock_acquire(*, account: MailAccount) -> str | None:
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


def lock_renew(*, account_id: int, owner: str) -> bool:
    """Push the lock's expiry one TTL ahead; False if ``owner`` no longer holds it."""
    return bool(
        SyncState.objects.filter(account_id=account_id, lock_owner=owner).update(
            lock_expires_at=timezone.now() + sync_lock_ttl()
        )
    )


def lock_release(*, account: MailAccount, owner: str, **values) -> None:
    SyncState.objects.filter(account=account, lock_owner=owner).update(lock_owner="", lock_expires_at=None, **values)


def lock_expires_in(*, account: MailAccount) -> float | None:
    """Seconds until the account's current lock expires unless its holder renews it (None: not locked)."""
    expires = SyncState.objects.filter(account=account).values_list("lock_expires_at", flat=True).first()
    if expires is None:
        return None
    return max((expires - timezone.now()).total_seconds(), 0.0)


class LockHeartbeat:
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

    def start(self) -> LockHeartbeat:
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
                    renewed = lock_renew(account_id=self.account_id, owner=self.owner)
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


@contextmanager
def lock_kept(*, account_id: int, owner: str) -> Iterator[LockHeartbeat]:
    """Keep ``owner``'s lock alive while the block runs; the block's progress writes are checked against it."""
    token = _lock_owner.set(owner)
    heartbeat = LockHeartbeat(account_id=account_id, owner=owner).start()
    heartbeat_token = _heartbeat.set(heartbeat)
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
        _heartbeat.reset(heartbeat_token)
        _lock_owner.reset(token)
