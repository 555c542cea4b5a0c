"""A real Celery worker on the local Redis runs the sync, beat's fan-out and the outbox."""

import time

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from mailbox import outbox, sync, tasks
from mailbox.models import Message, OutgoingMessage, SyncState
from mailhub.celery import app as celery_app
from tests.fixtures.faults import redis_test_url

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = redis_test_url(base=2, variable="MAILHUB_TEST_CELERY_REDIS_DB")


def _use_broker(url: str) -> None:
    celery_app.conf.broker_url = url
    celery_app._pool = None  # the producer pool is bound to the broker it was made for
    celery_app.amqp._producer_pool = None


@pytest.fixture
def redis_worker():
    redis.Redis.from_url(REDIS_URL).flushdb()
    previous = celery_app.conf.broker_url
    _use_broker(REDIS_URL)
    try:
        queues = list(tasks.SYNC_QUEUES)
        with start_worker(
            celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING", queues=queues
        ):
            yield celery_app
    finally:
        _use_broker(previous)
        redis.Redis.from_url(REDIS_URL).flushdb()


def _wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_worker_runs_first_sync_beat_fanout_and_outbox(redis_worker, gmail_account, gmail_mailbox):
    gmail_mailbox.seed(40)
    sync.account_sync_start(account=gmail_account, since=None)  # queued on commit, to Redis
    assert _wait_for(
        lambda: SyncState.objects.filter(
            account=gmail_account, stage=SyncState.Stage.INCREMENTAL, status=SyncState.Status.IDLE
        ).exists()
    )
    assert Message.objects.filter(account=gmail_account).count() == 40

    new_id = gmail_mailbox.deliver(subject="Arrived later")
    from mailbox.tasks import accounts_sync_due

    accounts_sync_due.delay()
    assert _wait_for(lambda: Message.objects.filter(account=gmail_account, remote_id=new_id).exists())

    outgoing = OutgoingMessage.objects.create(
        account=gmail_account, to=[{"name": "", "email": "dan@example.org"}], subject="From the worker", body_text="x"
    )
    outbox.outgoing_queue(outgoing=outgoing)
    assert _wait_for(lambda: OutgoingMessage.objects.get(pk=outgoing.pk).status == OutgoingMessage.Status.SENT)
    assert len(gmail_mailbox.store.sent_messages(gmail_mailbox.email)) == 1
