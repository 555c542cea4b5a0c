"""Watchers (mailbox/watch.py) over real sockets: IMAP IDLE against Dovecot (a message appended by another
connection, the server dropping the connection, a server without IDLE), Gmail history polls against the sandbox,
leases between watchers, and a sync asked for while another runs."""

from __future__ import annotations

import json
import logging
import queue
import select
import threading
import time
import uuid
from datetime import datetime, timedelta
from email.utils import make_msgid

import pytest
from django.utils import timezone

from mailbox import sync, watch
from mailbox.local import account_client
from mailbox.models import Message, SyncState
from mailbox.synclock import lock_acquire, lock_release
from sandbox.dovecot import DovecotServer, free_port
from tests.fixtures.dovecot import PLAIN_IMAP_CAPABILITY

pytestmark = pytest.mark.django_db(transaction=True)
BOUND = 5.0  # seconds within which a watch must report a change it can see at once (IDLE) or at its next poll


def _raw(subject: str, *, sender: str = "carol@example.org", to: str = "me@example.org") -> tuple[bytes, str]:
    message_id = make_msgid(domain="example.org")
    headers = {"From": sender, "To": to, "Subject": subject, "Message-ID": message_id,
               "Date": "Mon, 30 Nov 2026 08:00:00 +0000", "Content-Type": "text/plain; charset=utf-8"}  # fmt: skip
    lines = [f"{name}: {value}" for name, value in headers.items()] + ["", "Hello.", ""]
    return "\r\n".join(lines).encode(), message_id.strip("<>")


def _wait_open(account, *, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if SyncState.objects.filter(account=account, watched_since__isnull=False).exists():
            return
        time.sleep(0.05)
    raise AssertionError("the watch did not open")


class Running:
    """A :class:`watch.Watcher` in a thread, its reports in a queue."""

    def __init__(self, *, owner: str = "", capacity: int | None = None) -> None:
        self.reports: queue.Queue[int] = queue.Queue()
        self.stop = threading.Event()
        self.watcher = watch.Watcher(owner=owner or uuid.uuid4().hex, on_change=self.reports.put, capacity=capacity)
        self.thread = threading.Thread(target=self.watcher.run, kwargs={"stop": self.stop}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def wait_open(self, account) -> None:
        _wait_open(account)

    def report(self, *, timeout: float = BOUND) -> int:
        return self.reports.get(timeout=timeout)

    def quiet(self, seconds: float) -> bool:
        try:
            self.reports.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def fast_watch(settings):
    settings.MAILHUB_WATCH_LEASE_SECONDS = 3
    settings.MAILHUB_WATCH_RETRY_SECONDS = 0.5
    settings.MAILHUB_GMAIL_POLL_SECONDS = 0.5
    settings.MAILHUB_IMAP_POLL_SECONDS = 0.5
    return settings


def _synced(account):
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    return account


# --- IMAP IDLE ---------------------------------------------------------------------------------------------


@pytest.mark.dovecot
def test_idle_reports_new_mail_and_flag_changes_from_another_connection_and_the_sync_stores_it(
    dovecot, outlook_account, fast_watch
):
    account = _synced(outlook_account())
    with Running() as running:
        running.wait_open(account)
        assert running.quiet(1.0)  # an idle mailbox reports nothing
        raw, message_id = _raw("Fresh news")
        uid = dovecot.append(account.email, raw)
        assert running.report() == account.pk
        assert sync.account_sync(account_id=account.pk).outcome == "ok"
        assert Message.objects.filter(account=account, message_id=message_id).exists()
        dovecot.set_flags(account.email, "INBOX", [uid], ["\\Seen"])
        assert running.report() == account.pk
        assert running.quiet(0.5)
        dovecot.expunge(account.email, "INBOX", [uid])  # told as VANISHED: the watch enabled QRESYNC
        assert running.report() == account.pk
    assert running.watcher.changes == 3  # what the task returns


@pytest.mark.dovecot
def test_idle_is_issued_again_before_the_server_forgets_it(dovecot, outlook_account, fast_watch):
    fast_watch.MAILHUB_IDLE_RENEW_SECONDS = 0.5
    account = _synced(outlook_account())
    opened = account_client(account).watch()
    opened.open()
    try:
        first_renewal = opened.check_at()
        time.sleep(0.6)
        assert opened.changed() is False  # DONE, then IDLE again: nothing changed
        assert opened.check_at() > first_renewal
        dovecot.append(account.email, _raw("After renewal")[0])
        readable, _, _ = select.select([opened.fileno()], [], [], BOUND)
        assert readable and opened.changed(), "a renewed IDLE still reports new mail"
    finally:
        opened.close()


@pytest.mark.dovecot
def test_a_dropped_connection_is_opened_again_and_what_came_meanwhile_is_reported(dovecot, outlook_account, fast_watch):
    account = _synced(outlook_account())
    with Running() as running:
        running.wait_open(account)
        dovecot.kick(account.email)
        dovecot.append(account.email, _raw("While the watch was down")[0])
        # Reopened after MAILHUB_WATCH_RETRY_SECONDS: a sync is asked for what may have come meanwhile.
        assert running.report(timeout=3) == account.pk
        running.wait_open(account)
        while not running.quiet(0.5):
            pass
        dovecot.append(account.email, _raw("After the reconnect")[0])
        assert running.report() == account.pk


@pytest.fixture(scope="module")
def dovecot_without_idle(sandbox):
    server = DovecotServer(
        introspection_url=sandbox.microsoft_introspection_url,
        tls=sandbox.tls,
        imap_capability=PLAIN_IMAP_CAPABILITY.replace(" IDLE", ""),
    ).start()
    yield server
    server.stop()


@pytest.mark.dovecot
def test_a_server_without_idle_is_polled_with_noop(dovecot_without_idle, outlook_account, fast_watch):
    fast_watch.MICROSOFT_IMAP_PORT = dovecot_without_idle.imaps_port
    account = _synced(outlook_account())
    opened = account_client(account).watch()
    opened.open()
    try:
        assert opened.fileno() is None  # nothing to wait on: polled
        assert b"IDLE" not in opened.session.capabilities
    finally:
        opened.close()
    with Running() as running:
        running.wait_open(account)
        assert running.quiet(1.2)
        uid = dovecot_without_idle.append(account.email, _raw("Polled in")[0])
        assert running.report() == account.pk
        assert running.quiet(1.2)
        dovecot_without_idle.expunge(account.email, "INBOX", [uid])  # EXPUNGE: no QRESYNC there
        assert running.report() == account.pk


# --- Gmail -------------------------------------------------------------------------------------------------


def test_gmail_history_poll_reports_new_mail_and_only_then(gmail_account, sandbox_settings, fast_watch):
    account = _synced(gmail_account)
    store = sandbox_settings.gmail
    with Running() as running:
        running.wait_open(account)
        asked = store.stats(account.email).get("history.list", 0)
        assert running.quiet(1.6)
        assert store.stats(account.email).get("history.list", 0) - asked >= 2  # polled, and nothing reported
        raw, message_id = _raw("Polled from Gmail", to=account.email)
        store.insert_message(account.email, raw)
        assert running.report() == account.pk
        assert sync.account_sync(account_id=account.pk).outcome == "ok"
        assert Message.objects.filter(account=account, message_id=message_id).exists()
        assert running.quiet(1.2)  # the cursor moved on: the same change is not reported twice


# --- leases ------------------------------------------------------------------------------------------------


def test_watchers_share_mailboxes_and_a_dead_watchers_leases_are_taken_over(alice, google_app, sandbox_settings,
                                                                             settings):  # fmt: skip
    from tests.fixtures.mail import gmail_account_create

    settings.MAILHUB_WATCH_LEASE_SECONDS = 1
    accounts = [gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice) for _ in range(3)]
    SyncState.objects.filter(account__in=accounts).update(stage=SyncState.Stage.INCREMENTAL)
    assert watch.watchers_wanted()
    first = watch.leases_take(owner="first", capacity=2)
    second = watch.leases_take(owner="second", capacity=2)
    assert len(first) == 2 and len(second) == 1 and not first & second
    assert watch.leases_take(owner="first", capacity=2) == first  # full: renews, takes nothing more
    assert not watch.watchers_wanted()
    assert watch.leases_take(owner="first", capacity=2) == first  # renewed, not taken twice
    time.sleep(1.2)  # "second" died: it renews nothing
    assert watch.watchers_wanted()
    assert watch.leases_take(owner="first", capacity=3) == {a.pk for a in accounts}
    accounts[0].status = accounts[0].Status.REAUTH_REQUIRED
    accounts[0].save()
    assert watch.leases_take(owner="first", capacity=3) == {a.pk for a in accounts[1:]}  # no longer watchable
    assert SyncState.objects.get(account=accounts[0]).watch_owner == ""


def test_a_watcher_takes_what_room_it_has(alice, google_app, sandbox_settings):
    from tests.fixtures.mail import gmail_account_create

    accounts = [gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice) for _ in range(3)]
    SyncState.objects.filter(account__in=accounts).update(stage=SyncState.Stage.INCREMENTAL)
    assert len(watch.leases_take(owner="one", capacity=1)) == 1
    assert len(watch.leases_take(owner="one", capacity=1)) == 1  # full, though two are free
    assert len(watch.leases_take(owner="two", capacity=3)) == 2


def test_only_mailboxes_past_their_first_sync_are_watched(gmail_account):
    assert not watch.watchers_wanted()  # its first sync has not run
    _synced(gmail_account)
    assert watch.watchers_wanted()


def test_a_watched_mailbox_is_synced_by_beat_less_often_and_as_often_as_others_while_its_watch_is_down(
    gmail_account, settings
):
    settings.MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS = 300
    _synced(gmail_account)
    assert gmail_account.pk in sync.accounts_due_for_sync()
    watch.leases_take(owner="w", capacity=5)
    assert gmail_account.pk in sync.accounts_due_for_sync()  # leased, but its watch is not open yet
    SyncState.objects.filter(account=gmail_account).update(watched_since=timezone.now())
    assert gmail_account.pk not in sync.accounts_due_for_sync()
    SyncState.objects.filter(account=gmail_account).update(last_success_at=timezone.now() - timedelta(seconds=600))
    assert gmail_account.pk in sync.accounts_due_for_sync()  # the safety sync of a watched mailbox is due
    SyncState.objects.filter(account=gmail_account).update(last_success_at=timezone.now())
    watch.leases_release(owner="w")
    assert gmail_account.pk in sync.accounts_due_for_sync()


def test_a_stopping_watcher_gives_its_leases_back(gmail_account, fast_watch):
    _synced(gmail_account)
    with Running(owner="leaving") as running:
        running.wait_open(gmail_account)
    state = SyncState.objects.get(account=gmail_account)
    assert (state.watch_owner, state.watched_since) == ("", None)
    assert watch.watchers_wanted()


# --- a sync asked for while another runs -----------------------------------------------------------------


def test_a_sync_asked_for_while_another_runs_makes_that_one_run_again(gmail_account, sandbox_settings):
    _synced(gmail_account)
    sandbox_settings.gmail.delay_next(1.5, method="history.list", email=gmail_account.email)
    results: list[sync.SyncResult] = []
    running = threading.Thread(target=lambda: results.append(sync.account_sync(account_id=gmail_account.pk)))
    running.start()
    deadline = time.monotonic() + 5
    while not SyncState.objects.filter(account=gmail_account, lock_owner__gt="").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    asked = sync.account_sync(account_id=gmail_account.pk)
    running.join(timeout=10)
    assert asked.outcome == "busy"
    assert results[0].outcome == "ok" and results[0].again  # the request came after it had started
    assert sync.account_sync(account_id=gmail_account.pk).again is False


def test_a_request_that_finds_the_lock_just_released_runs_the_sync_itself(gmail_account):
    _synced(gmail_account)
    owner = lock_acquire(account=gmail_account)
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "busy"
    assert SyncState.objects.get(account=gmail_account).sync_requested_at is not None
    lock_release(account=gmail_account, owner=owner)
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"


def test_beat_queues_a_mailbox_again_only_once_its_queued_sync_started(gmail_account):
    _synced(gmail_account)
    assert gmail_account.pk in sync.accounts_due_for_sync()
    assert sync.accounts_queued([gmail_account.pk]) == set()  # past its first sync: the default queue
    assert gmail_account.pk not in sync.accounts_due_for_sync()  # a backed-up queue is not flooded
    _synced(gmail_account)  # the queued sync ran
    assert gmail_account.pk in sync.accounts_due_for_sync()
    sync.accounts_queued([gmail_account.pk])
    SyncState.objects.filter(account=gmail_account).update(sync_queued_at=timezone.now() - timedelta(minutes=11))
    assert gmail_account.pk in sync.accounts_due_for_sync()  # taken for lost after a while
    SyncState.objects.filter(account=gmail_account).update(stage=SyncState.Stage.PENDING)
    assert sync.accounts_queued([gmail_account.pk]) == {gmail_account.pk}  # in its first sync: the bulk queue


@pytest.fixture
def redis_broker(monkeypatch):
    """Tasks queued by this process go to a Redis database of their own, whose queues the test reads."""
    import redis

    from mailhub.celery import app
    from tests.fixtures.faults import redis_test_url

    url = redis_test_url(base=6, variable="MAILHUB_TEST_WATCH_REDIS_DB")
    previous = (app.conf.broker_url, app.conf.broker_transport_options, app.conf.task_always_eager)
    client = redis.Redis.from_url(url)
    client.flushdb()
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads it before its configuration
    app.conf.broker_url, app.conf.broker_transport_options, app.conf.task_always_eager = url, {}, False
    app._pool = app.amqp._producer_pool = None
    yield client
    app.conf.broker_url, app.conf.broker_transport_options, app.conf.task_always_eager = previous
    app._pool = app.amqp._producer_pool = None
    client.flushdb()


def test_syncs_go_to_the_queue_their_kind_calls_for(alice, google_app, sandbox_settings, redis_broker):
    from mailbox import tasks
    from tests.fixtures.mail import gmail_account_create

    new, synced = (gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice) for _ in range(2))
    _synced(synced)
    assert tasks.accounts_sync_due() == 2  # beat: the first sync on "bulk", the periodic one on "poll"
    assert (redis_broker.llen("bulk"), redis_broker.llen("poll"), redis_broker.llen("celery")) == (1, 1, 0)
    tasks.account_sync_enqueue(synced.pk)  # asked for by a watcher or a person
    assert redis_broker.llen("celery") == 1
    assert tasks.watchers_ensure() is True
    assert redis_broker.llen("watch") == 1
    expires = datetime.fromisoformat(json.loads(redis_broker.lindex("watch", 0))["headers"]["expires"])
    assert timedelta(seconds=55) < expires - timezone.now() <= timedelta(seconds=60)  # none pile up unread


def test_a_worker_shutting_down_stops_its_watchers_and_they_give_their_leases_back(gmail_account, fast_watch):
    from celery.signals import worker_shutting_down

    from mailbox import tasks

    _synced(gmail_account)
    watcher = threading.Thread(target=tasks.mailboxes_watch, daemon=True)
    watcher.start()
    try:
        _wait_open(gmail_account)
        worker_shutting_down.send(sender="test", sig="TERM", how="warm", exitcode=0)
        watcher.join(timeout=10)
        assert not watcher.is_alive()
        assert SyncState.objects.get(account=gmail_account).watch_owner == ""
    finally:
        watch.stopping.clear()


def test_a_watch_that_cannot_open_is_retried_and_the_others_stay_watched(
    dovecot, outlook_account, gmail_account, fast_watch, caplog
):
    _synced(gmail_account)
    broken = _synced(outlook_account())
    fast_watch.MICROSOFT_IMAP_PORT = free_port()  # nothing listens there: the watch cannot open
    with Running() as running:
        _wait_open(gmail_account)
        time.sleep(1.5)  # several failed opens of the other, 0.5 s apart and doubling
        assert running.thread.is_alive()
        assert not SyncState.objects.filter(account=broken, watched_since__isnull=False).exists()
        fast_watch.MICROSOFT_IMAP_PORT = dovecot.imaps_port  # the server is back
        _wait_open(broken)
        assert running.report() == broken.pk  # opened again: what came meanwhile is synced
    assert "is down" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # failures to open are not crashes


def test_a_running_watcher_renews_its_leases_before_they_lapse(gmail_account, fast_watch, caplog):
    fast_watch.MAILHUB_WATCH_LEASE_SECONDS = 1
    _synced(gmail_account)
    with Running():
        _wait_open(gmail_account)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert not watch.watchers_wanted()  # never free for another watcher to take
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_watcher_with_nothing_to_hold_stops(gmail_account):
    done = threading.Event()
    watcher = watch.Watcher(owner="idle", on_change=lambda account_id: None)
    threading.Thread(target=lambda: (watcher.run(stop=threading.Event()), done.set()), daemon=True).start()
    assert done.wait(timeout=5)  # its first sync has not run: nothing is watchable


def test_leases_are_renewed_every_third_of_their_time_not_every_round(gmail_account, fast_watch):
    fast_watch.MAILHUB_WATCH_LEASE_SECONDS = 30
    _synced(gmail_account)
    with Running():
        _wait_open(gmail_account)
        first = SyncState.objects.get(account=gmail_account).watch_expires_at
        time.sleep(1.5)  # three Gmail polls, three rounds at least
        assert SyncState.objects.get(account=gmail_account).watch_expires_at == first
