"""Celery tasks: thin wrappers named like the service each calls, taking ids and returning its outcome."""

from __future__ import annotations

import os
import socket
import uuid

from celery import shared_task
from celery.signals import worker_shutting_down

from mailbox import outbox, sync, watch, writeback
from mailbox.models import SyncState
from mailbox.sync import SyncOutcome
from providers.base import ChangeKind, MessageChange

MAX_SYNC_RETRIES = 8
# First syncs run on a queue of their own, served by a worker of their own (``make run``, docker-compose), so a
# mailbox's 200,000-message first sync never delays another's new mail. Beat's periodic syncs have a queue of
# their own on the main worker, which takes from its queues in turn: a sync a watcher asked for waits behind one
# periodic sync at most, not behind a thousand. Watchers hold the ``watch`` queue's threads while they run.
FIRST_SYNC_QUEUE = "bulk"
PERIODIC_SYNC_QUEUE = "poll"
WATCH_QUEUE = "watch"
SYNC_QUEUES = ("celery", FIRST_SYNC_QUEUE, PERIODIC_SYNC_QUEUE)  # every queue a sync may be sent to


def account_sync_enqueue(
    account_id: int,
    *,
    countdown: float | None = None,
    first: bool | None = None,
    periodic: bool = False,
    **kwargs: object,
) -> None:
    """Queue a sync of the account on the queue its stage calls for (``first``: whether it is in its first sync,
    when the caller knows; ``periodic``: beat's, not asked for by a watcher or a person)."""
    if first is None:
        first = SyncState.objects.filter(account_id=account_id).exclude(stage=SyncState.Stage.INCREMENTAL).exists()
    queue = FIRST_SYNC_QUEUE if first else PERIODIC_SYNC_QUEUE if periodic else None
    account_sync.apply_async((account_id,), kwargs or None, countdown=countdown, queue=queue)


@shared_task(bind=True, max_retries=MAX_SYNC_RETRIES, ignore_result=True)
def account_sync(self, account_id: int, look_again_when_busy: bool = True) -> str:
    result = sync.account_sync(account_id=account_id)
    if result.outcome == SyncOutcome.RETRY and self.request.retries < self.max_retries:
        raise self.retry(countdown=result.retry_after or 60)
    if result.outcome == SyncOutcome.BUSY and look_again_when_busy and result.retry_after is not None:
        # The lock's holder may be dead (this may be its own task, redelivered after a crash): look again once
        # when its lock would lapse. A live holder renews it, and the second look is then a no-op.
        account_sync_enqueue(account_id, countdown=result.retry_after, look_again_when_busy=False)
    if result.again:
        account_sync_enqueue(account_id)
    return result.outcome


@shared_task(ignore_result=True)
def accounts_sync_due() -> int:
    """Beat: queue a sync of every account that is due (sync.accounts_due_for_sync)."""
    account_ids = sync.accounts_due_for_sync()
    first = sync.accounts_queued(account_ids)
    for account_id in account_ids:
        account_sync_enqueue(account_id, first=account_id in first, periodic=True)
    return len(account_ids)


@shared_task(ignore_result=True, acks_late=False)
def mailboxes_watch() -> int:
    """A watcher (mailbox.watch): runs until the worker stops or nothing is left to watch. Acknowledged when it
    starts, so a broker never hands a live watcher's task to a second worker; beat replaces a dead one."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return watch.Watcher(owner=owner, on_change=account_sync_enqueue).run()


@shared_task(ignore_result=True)
def watchers_ensure() -> bool:
    """Beat: start a watcher while a watchable mailbox has none. It expires unless a watch worker takes it soon,
    so none pile up where no watch worker runs."""
    if not watch.watchers_wanted():
        return False
    mailboxes_watch.apply_async(queue=WATCH_QUEUE, expires=watch.WATCHER_TASK_EXPIRES_SECONDS)
    return True


@worker_shutting_down.connect
def _watchers_stop(**_: object) -> None:
    watch.stopping.set()


@shared_task(ignore_result=True)
def outgoing_send(outgoing_id: int) -> str:
    """One step of the outbox's state machine; comes back by itself when the row says when."""
    result = outbox.outgoing_send(outgoing_id=outgoing_id)
    if result.retry_after is not None:
        outgoing_send.apply_async((outgoing_id,), countdown=max(result.retry_after, 0.5))
    return result.outcome


@shared_task(ignore_result=True)
def outgoing_file(outgoing_id: int) -> bool:
    return outbox.outgoing_file(outgoing_id=outgoing_id)


@shared_task(ignore_result=True)
def outbox_sweep() -> int:
    """Beat: dispatch again what a lost task or a dead worker left in the outbox."""
    result = outbox.outbox_sweep()
    for outgoing_id in result.send:
        outgoing_send.delay(outgoing_id)
    for outgoing_id in result.file:
        outgoing_file.delay(outgoing_id)
    for outgoing_id, due in result.scheduled:
        outgoing_send.apply_async((outgoing_id,), eta=due)
    return len(result.send) + len(result.file) + len(result.scheduled)


@shared_task(bind=True, max_retries=6, ignore_result=True)
def messages_change_apply(self, account_id: int, message_ids: list[int], kind: str, folder_remote_id: str = "") -> str:
    change = MessageChange(kind=ChangeKind(kind), folder_remote_id=folder_remote_id)
    result = writeback.messages_change_apply(account_id=account_id, message_ids=message_ids, change=change)
    if result.outcome == SyncOutcome.RETRY and self.request.retries < self.max_retries:
        raise self.retry(countdown=result.retry_after or 30 * 2**self.request.retries)
    return result.outcome
