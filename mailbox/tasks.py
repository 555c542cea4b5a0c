"""Celery tasks: thin wrappers that take ids and call one service each."""

from __future__ import annotations

from celery import shared_task

from mailbox import outbox, services
from providers.base import ChangeKind, MessageChange

MAX_SYNC_RETRIES = 8


@shared_task(bind=True, max_retries=MAX_SYNC_RETRIES, ignore_result=True)
def sync_account(self, account_id: int, look_again_when_busy: bool = True) -> str:
    result = services.account_sync(account_id=account_id)
    if result.outcome == "retry" and self.request.retries < self.max_retries:
        raise self.retry(countdown=result.retry_after or 60)
    if result.outcome == "busy" and look_again_when_busy and result.retry_after is not None:
        # The lock's holder may be dead (this may be its own task, redelivered after a crash): look again once
        # when its lock would lapse. A live holder renews it, and the second look is then a no-op.
        sync_account.apply_async((account_id,), {"look_again_when_busy": False}, countdown=result.retry_after)
    return result.outcome


@shared_task(ignore_result=True)
def sync_all_accounts() -> int:
    account_ids = services.accounts_due_for_sync()
    for account_id in account_ids:
        sync_account.delay(account_id)
    return len(account_ids)


@shared_task(ignore_result=True)
def send_outgoing(outgoing_id: int) -> str:
    """One step of the outbox's state machine; comes back by itself when the row says when."""
    result = outbox.outgoing_send(outgoing_id=outgoing_id)
    if result.retry_after is not None:
        send_outgoing.apply_async((outgoing_id,), countdown=max(result.retry_after, 0.5))
    return result.outcome


@shared_task(ignore_result=True)
def file_outgoing(outgoing_id: int) -> bool:
    return outbox.outgoing_file(outgoing_id=outgoing_id)


@shared_task(ignore_result=True)
def sweep_outbox() -> int:
    """Beat: dispatch again what a lost task or a dead worker left in the outbox."""
    result = outbox.outbox_sweep()
    for outgoing_id in result.send:
        send_outgoing.delay(outgoing_id)
    for outgoing_id in result.file:
        file_outgoing.delay(outgoing_id)
    return len(result.send) + len(result.file)


@shared_task(bind=True, max_retries=6, ignore_result=True)
def apply_change(self, account_id: int, message_ids: list[int], kind: str, folder_remote_id: str = "") -> str:
    change = MessageChange(kind=ChangeKind(kind), folder_remote_id=folder_remote_id)
    result = services.messages_change_apply(account_id=account_id, message_ids=message_ids, change=change)
    if result.outcome == "retry" and self.request.retries < self.max_retries:
        raise self.retry(countdown=result.retry_after or 30 * 2**self.request.retries)
    return result.outcome
