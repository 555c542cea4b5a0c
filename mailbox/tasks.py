"""Celery tasks: thin wrappers named like the service each calls, taking ids and returning its outcome."""

from __future__ import annotations

from celery import shared_task

from mailbox import outbox, sync, writeback
from mailbox.sync import SyncOutcome
from providers.base import ChangeKind, MessageChange

MAX_SYNC_RETRIES = 8


@shared_task(bind=True, max_retries=MAX_SYNC_RETRIES, ignore_result=True)
def account_sync(self, account_id: int, look_again_when_busy: bool = True) -> str:
    result = sync.account_sync(account_id=account_id)
    if result.outcome == SyncOutcome.RETRY and self.request.retries < self.max_retries:
        raise self.retry(countdown=result.retry_after or 60)
    if result.outcome == SyncOutcome.BUSY and look_again_when_busy and result.retry_after is not None:
        # The lock's holder may be dead (this may be its own task, redelivered after a crash): look again once
        # when its lock would lapse. A live holder renews it, and the second look is then a no-op.
        account_sync.apply_async((account_id,), {"look_again_when_busy": False}, countdown=result.retry_after)
    return result.outcome


@shared_task(ignore_result=True)
def accounts_sync_due() -> int:
    """Beat: queue a sync of every account that is due (sync.accounts_due_for_sync)."""
    account_ids = sync.accounts_due_for_sync()
    for account_id in account_ids:
        account_sync.delay(account_id)
    return len(account_ids)


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
