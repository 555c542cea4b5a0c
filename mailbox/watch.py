"""Watchers: new mail in the database within seconds, for hundreds of mailboxes per worker thread.

A watcher is a long-running Celery task on the ``watch`` queue (``mailbox.tasks.mailboxes_watch``). It leases up
to MAILHUB_WATCH_CAPACITY accounts (``SyncState.watch_owner`` / ``watch_expires_at``, renewed every third of
MAILHUB_WATCH_LEASE_SECONDS), keeps one provider watch open per account (IMAP IDLE, Gmail history polls: see
``providers.base.MailboxWatch``) in one thread with a selector, and queues a sync of an account as soon as its
watch says the mailbox changed.

Beat queues a watcher while a watchable account has no live lease (:func:`watchers_wanted`), so a watcher that
dies is replaced once its leases lapse, and a watcher on another machine takes a share with no configuration
beyond the broker. A watcher with nothing left to hold stops. ``SyncState.watched_since`` is set while an
account's watch is open: beat then syncs it only every MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS (15 min; for IMAP
folders besides INBOX), and as often as any other account while its watch is down.
"""

from __future__ import annotations

import heapq
import logging
import resource
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import MailAccount
from accounts.services import providers_off
from mailbox.local import account_client
from mailbox.models import SyncState
from providers.base import MailboxWatch
from providers.errors import ProviderError, ReconnectRequired

logger = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 300.0
OPENS_PER_ROUND = 20  # watches opened between two looks at the sockets, so a big start-up delays no news
IDLE_ROUND_SECONDS = 1.0
WATCHER_TASK_EXPIRES_SECONDS = 60.0

#: Set when the worker shuts down: every watcher closes its watches, gives its leases back and returns.
stopping = threading.Event()


def _retry_first() -> float:
    """Seconds before a watch that failed is opened again (doubling with each failure in a row)."""
    return float(settings.MAILHUB_WATCH_RETRY_SECONDS)


def watchable() -> QuerySet[SyncState]:
    """Sync states of the accounts worth watching: connected, provider on, first sync done."""
    return SyncState.objects.filter(
        account__status=MailAccount.Status.ACTIVE, stage=SyncState.Stage.INCREMENTAL
    ).exclude(account__provider__in=providers_off())


def _lease_free(now: datetime) -> Q:
    return Q(watch_owner="") | Q(watch_expires_at__lt=now)


def watchers_wanted() -> bool:
    """Whether a watchable account has no watcher (none yet, or its watcher died and the lease lapsed)."""
    return watchable().filter(_lease_free(timezone.now())).exists()


def leases_take(*, owner: str, capacity: int) -> set[int]:
    """Renew ``owner``'s leases on accounts still watchable, give back the others, take free ones up to
    ``capacity``; returns the account ids ``owner`` holds now."""
    now = timezone.now()
    expires = now + timedelta(seconds=float(settings.MAILHUB_WATCH_LEASE_SECONDS))
    mine = watchable().filter(watch_owner=owner)
    mine.update(watch_expires_at=expires)
    SyncState.objects.filter(watch_owner=owner).exclude(pk__in=mine.values("pk")).update(
        watch_owner="", watch_expires_at=None, watched_since=None
    )
    room = capacity - mine.count()
    if room > 0:
        free = list(watchable().filter(_lease_free(now)).order_by("pk").values_list("pk", flat=True)[:room])
        SyncState.objects.filter(_lease_free(now), pk__in=free).update(
            watch_owner=owner, watch_expires_at=expires, watched_since=None
        )
    return set(watchable().filter(watch_owner=owner).values_list("account_id", flat=True))


def leases_release(*, owner: str) -> None:
    SyncState.objects.filter(watch_owner=owner).update(watch_owner="", watch_expires_at=None, watched_since=None)


def _watched(*, owner: str, account_id: int, since: bool) -> None:
    SyncState.objects.filter(account_id=account_id, watch_owner=owner).update(
        watched_since=timezone.now() if since else None
    )


@dataclass
class _Held:
    account_id: int
    watch: MailboxWatch | None = None
    failures: int = 0  # in a row: each doubles the wait before the watch is opened again
    fd: int | None = None
    timer_at: float = -1.0  # the latest time queued for it in Watcher.timers (older entries are stale)


class Watcher:
    """Holds the watches of the accounts ``owner`` leases; calls ``on_change(account_id)`` when one changed."""

    def __init__(self, *, owner: str, on_change: Callable[[int], None], capacity: int | None = None) -> None:
        self.owner = owner
        self.on_change = on_change
        self.capacity = capacity or int(settings.MAILHUB_WATCH_CAPACITY)
        self.held: dict[int, _Held] = {}
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int]] = []  # (when, account id): checks and (re)opens due, lazily pruned
        self.changes = 0

    def run(self, *, stop: threading.Event = stopping) -> int:
        """Watch until ``stop`` is set or nothing is left to hold; returns how many changes were reported."""
        _descriptors_raise()
        lease_every = float(settings.MAILHUB_WATCH_LEASE_SECONDS) / 3
        lease_at = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= lease_at:
                    if not self._leases_refresh():
                        break
                    lease_at = time.monotonic() + lease_every
                self._round(timeout=min(self._next_timer(), lease_at) - time.monotonic())
        finally:
            self._close_all()
            leases_release(owner=self.owner)
            close_old_connections()
        return self.changes

    # --- leases and opening -------------------------------------------------------------------------

    def _leases_refresh(self) -> bool:
        ids = leases_take(owner=self.owner, capacity=self.capacity)
        for account_id in set(self.held) - ids:
            self._close(self.held.pop(account_id))
        for account_id in ids - set(self.held):
            self.held[account_id] = held = _Held(account_id)
            self._timer(held, 0.0)
        return bool(self.held)

    def _open(self, held: _Held) -> None:
        reopened = held.failures > 0
        try:
            account = MailAccount.objects.get(pk=held.account_id)
            watch = account_client(account).watch()
            watch.open()
        except MailAccount.DoesNotExist:
            self.held.pop(held.account_id, None)
            return
        except ReconnectRequired:
            self._failed(held, "its sign-in was refused", retry=RETRY_MAX_SECONDS)
            self.on_change(held.account_id)  # the sync records that the user must reconnect
            return
        except ProviderError as exc:
            self._failed(held, str(exc))
            return
        except Exception:
            logger.exception("Watch of account %s could not be opened", held.account_id)
            self._failed(held, "an unexpected error")
            return
        held.watch, held.failures = watch, 0
        held.fd = watch.fileno()
        if held.fd is not None:
            self.selector.register(held.fd, selectors.EVENT_READ, held.account_id)
        self._timer(held, watch.check_at())
        _watched(owner=self.owner, account_id=held.account_id, since=True)
        if reopened:
            self._report(held.account_id)  # what changed while the watch was down

    def _failed(self, held: _Held, why: str, *, retry: float | None = None) -> None:
        self._close(held)
        held.failures += 1
        delay = retry or min(_retry_first() * 2 ** (held.failures - 1), RETRY_MAX_SECONDS)
        self._timer(held, time.monotonic() + delay)
        _watched(owner=self.owner, account_id=held.account_id, since=False)
        logger.info("Watch of account %s is down (%s); opening it again in %.0fs", held.account_id, why, delay)

    def _close(self, held: _Held) -> None:
        if held.fd is not None:
            self.selector.unregister(held.fd)
            held.fd = None
        if held.watch is not None:
            try:
                held.watch.close()
            except Exception:  # noqa: BLE001 - a watch that is closing may be broken already
                logger.debug("Closing the watch of account %s failed", held.account_id, exc_info=True)
            held.watch = None

    def _close_all(self) -> None:
        for held in self.held.values():
            self._close(held)
        self.held.clear()
        self.selector.close()

    # --- watching -----------------------------------------------------------------------------------

    def _next_timer(self) -> float:
        return self.timers[0][0] if self.timers else time.monotonic() + IDLE_ROUND_SECONDS

    def _timer(self, held: _Held, when: float) -> None:
        if when != held.timer_at:
            held.timer_at = when
            heapq.heappush(self.timers, (when, held.account_id))

    def _round(self, *, timeout: float) -> None:
        """Wait for a socket or the next timer (at most ``timeout``), then check what is ready and open what is
        due (OPENS_PER_ROUND at most: the rest wait for the next round)."""
        wait = max(min(timeout, IDLE_ROUND_SECONDS), 0)
        readable = [key.data for key, _ in self.selector.select(timeout=wait)] if self.selector.get_map() else []
        if not self.selector.get_map():
            time.sleep(wait)
        for account_id in readable:
            held = self.held.get(account_id)
            if held is not None and held.watch is not None:
                self._check(held)
        now, opens = time.monotonic(), 0
        while self.timers and self.timers[0][0] <= now:
            when, account_id = heapq.heappop(self.timers)
            held = self.held.get(account_id)
            if held is None or when != held.timer_at:
                continue  # gone, or superseded by a later entry
            held.timer_at = -1.0
            if held.watch is not None:
                self._check(held)
            elif opens < OPENS_PER_ROUND:
                opens += 1
                self._open(held)
            else:
                self._timer(held, now)
                break

    def _check(self, held: _Held) -> None:
        watch = held.watch
        assert watch is not None
        try:
            changed = watch.changed()
        except ProviderError as exc:
            self._failed(held, str(exc))
            return
        except Exception:
            logger.exception("Watch of account %s failed", held.account_id)
            self._failed(held, "an unexpected error")
            return
        self._timer(held, watch.check_at())
        if changed:
            self._report(held.account_id)

    def _report(self, account_id: int) -> None:
        self.changes += 1
        self.on_change(account_id)


def _descriptors_raise() -> None:
    """One socket per watched mailbox: allow as many open files as the system lets this process have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
