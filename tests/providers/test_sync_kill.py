"""Kill-resume trials: a worker process SIGKILLed at random points of a first sync, again and again.

Each trial starts a real process running ``account_sync`` against the test database (SQLite file or
PostgreSQL) and the sandbox Gmail API or Dovecot over sockets, kills it once it has stored a random
number more messages, and measures how long its lock holds before another sync may take over (beat's
``accounts_due_for_sync`` lists the account). The last run finishes the sync. Then: the database equals
the mailbox, and the progress counter never went back and ends equal to what was stored.

MAILHUB_KILL_TRIALS (default 10) sets the number of kills; MAILHUB_KILL_LOCK_TTL (default 2 seconds)
the lock's TTL in the killed workers (60 in production: run with it to measure the real figure).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from mailbox import sync, synclock
from mailbox.models import Message, SyncState
from tests.fixtures.dovecot import outlook_client

pytestmark = pytest.mark.django_db(transaction=True)

TRIALS = int(os.environ.get("MAILHUB_KILL_TRIALS", "10"))
LOCK_TTL = float(os.environ.get("MAILHUB_KILL_LOCK_TTL", "2"))
ROOT = Path(__file__).resolve().parents[2]

# A fork server: it sets Django up once, then forks a fresh worker process for each account id it reads, and
# reports "started <pid>" and "exited <status>" (starting Python and Django anew for every trial took seconds).
WORKER_SERVER = r"""
import os, sys
import django
django.setup()
from mailbox.sync import account_sync
from providers.google import mail as gmail
from providers.imap import client as outlook
gmail.STORE_GROUP = 20  # progress (and a resume point) every 20 messages, so kills land between reports
outlook.ImapMailClient.__init__.__kwdefaults__["chunk_size"] = 20
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        outcome = account_sync(account_id=int(line))
        os.write(1, f"outcome {outcome}\n".encode())
        os._exit(0)
    print(f"started {pid}", flush=True)
    print(f"exited {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}", flush=True)
"""


class WorkerServer:
    def __init__(self, env: dict) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our code
            [sys.executable, "-c", WORKER_SERVER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def start(self, account_id: int) -> int:
        self.process.stdin.write(f"{account_id}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.startswith("started "), line
        return int(line.split()[1])

    def finished(self, pid: int) -> tuple[str, int] | None:
        """(outcome, exit code) once the worker ``pid`` has ended, else None (without blocking)."""
        import select

        if not select.select([self.process.stdout], [], [], 0)[0]:
            return None
        outcome = ""
        line = self.process.stdout.readline()
        if line.startswith("outcome "):
            outcome = line.split()[1]
            line = self.process.stdout.readline()
        assert line.startswith("exited "), line
        return outcome, int(line.split()[1])

    def wait(self, timeout: float = 30) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.finished(0)
            if result is not None:
                return result
            time.sleep(0.01)
        raise AssertionError("the worker did not end")

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class Trials:
    """What the trials saw: progress snapshots (done, total, stored) and the lock's hold after each kill."""

    account: object
    env: dict
    progress: list[tuple[int, int, int]] = field(default_factory=list)
    lock_held_after_kill: list[float] = field(default_factory=list)
    kills: int = 0

    def snapshot(self) -> None:
        done, total = (
            SyncState.objects.filter(account=self.account).values_list("progress_done", "progress_total").get()
        )
        self.progress.append((done, total, Message.objects.filter(account=self.account).count()))

    def run(self, *, server: WorkerServer, rng: random.Random, during_death=None) -> bool:
        """One worker: killed after storing 1-40 more messages (True), or left to finish (False)."""
        stored_before = Message.objects.filter(account=self.account).count()
        target = stored_before + rng.randint(1, 40)
        pid = server.start(self.account.pk)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.snapshot()
            ended = server.finished(pid)
            if ended is not None:
                assert ended == ("ok", 0), ended
                return False
            if self.progress[-1][2] >= target:
                break
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        assert server.wait() == ("", -signal.SIGKILL)
        killed_at = time.monotonic()
        self.kills += 1
        state = SyncState.objects.get(account=self.account)
        assert state.lock_owner and state.status == SyncState.Status.RUNNING  # nobody cleaned up after it
        if during_death:
            during_death()
        # Beat lists the account again as soon as the dead worker's lock has lapsed.
        while self.account.pk not in sync.accounts_due_for_sync():
            assert time.monotonic() - killed_at < LOCK_TTL + 10, "the dead worker's lock never lapsed"
            time.sleep(0.02)
        self.lock_held_after_kill.append(time.monotonic() - killed_at)
        self.snapshot()
        return True

    def check(self, *, expected_messages: int) -> None:
        self.snapshot()
        done_seen = [done for done, _, _ in self.progress]
        assert done_seen == sorted(done_seen), f"progress went back: {done_seen}"
        assert all(done <= stored and done <= total for done, total, stored in self.progress)
        state = SyncState.objects.get(account=self.account)
        stored = Message.objects.filter(account=self.account).count()
        assert stored == expected_messages
        assert (state.progress_done, state.progress_total) == (stored, stored)
        assert state.stage == SyncState.Stage.INCREMENTAL and not state.lock_owner
        # Renewed every TTL/4 and killed at any moment: the lock lapses between 3/4 TTL and one TTL later.
        assert max(self.lock_held_after_kill) <= LOCK_TTL + 1.0, self.lock_held_after_kill
        print(
            f"\n{connection.vendor}: {self.kills} kills; lock held after a kill: "
            f"{min(self.lock_held_after_kill):.2f}-{max(self.lock_held_after_kill):.2f}s (TTL {LOCK_TTL:g}s)"
        )


def _trials(account, env: dict, *, during_death=None) -> Trials:
    rng = random.Random(int(os.environ.get("MAILHUB_KILL_SEED", "9")))
    trials = Trials(account=account, env=env)
    server = WorkerServer(env)
    try:
        while trials.kills < TRIALS and trials.run(server=server, rng=rng, during_death=during_death):
            pass
    finally:
        server.stop()
    if trials.kills == TRIALS:  # then a sync in this process finishes the job
        assert sync.account_sync(account_id=account.pk).outcome == "ok"
    return trials


def _env(extra: dict) -> dict:
    return {
        **os.environ,
        **extra,
        "DJANGO_SETTINGS_MODULE": "mailhub.settings",
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MAILHUB_SYNC_LOCK_TTL_SECONDS": str(LOCK_TTL),
        "CELERY_BROKER_URL": "memory://",
    }


def test_gmail_first_sync_killed_again_and_again(gmail_account, gmail_mailbox, sandbox_settings):
    from tests.providers.test_gmail_sync import _assert_db_equals_mailbox

    gmail_mailbox.seed(600)
    delivered = []

    def deliver() -> None:  # mail keeps arriving while the worker lies dead
        delivered.append(gmail_mailbox.deliver(subject=f"while dead {len(delivered)}"))

    env = _env(sandbox_settings.env())
    trials = _trials(gmail_account, env, during_death=deliver)
    assert trials.kills == TRIALS
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)
    trials.check(expected_messages=600 + len(delivered))


@pytest.mark.dovecot
def test_outlook_first_sync_killed_again_and_again(dovecot, outlook_account, sandbox):
    account = outlook_account()
    inbox = dovecot.seed(account.email, 500)
    dovecot.seed(account.email, 40, folder="Archive", seed=3)
    with dovecot.client(account.email, folder="INBOX") as imap:
        imap.copy(inbox[::20], "Archive")  # the same 25 messages in two folders: one row each
    appended = []

    def append() -> None:
        appended.extend(dovecot.seed(account.email, 1, seed=100 + len(appended)))

    env = _env(
        {
            **sandbox.env(),
            "MICROSOFT_IMAP_HOST": "127.0.0.1",
            "MICROSOFT_IMAP_PORT": str(dovecot.imap_port),
            "MICROSOFT_IMAP_SECURITY": "none",
        }
    )
    trials = _trials(account, env, during_death=append)
    assert trials.kills == TRIALS
    trials.check(expected_messages=540 + len(appended))
    for folder in ("INBOX", "Archive"):
        server = {
            uid: tuple(sorted(f for f in flags if f in (b"\\Seen", b"\\Flagged")))
            for uid, flags in dovecot.snapshot(account.email, folder).items()
        }
        local = {}
        for row in account.folders.get(remote_id=folder).messagefolder_set.select_related("message"):
            m = row.message
            local[row.uid] = tuple(sorted([b"\\Flagged"] * m.is_starred + [b"\\Seen"] * m.is_read))
        assert local == server, folder


class _Killed(BaseException):
    """Stands in for SIGKILL inside this process: no except clause of the sync catches it."""


def _progress_spy(monkeypatch) -> list[tuple[int | None, int | None]]:
    reports: list[tuple[int | None, int | None]] = []
    real = synclock.sync_state_progress

    def spy(**kwargs):
        reports.append((kwargs.get("done"), kwargs.get("total")))
        return real(**kwargs)

    monkeypatch.setattr(synclock, "sync_state_progress", spy)
    return reports


def _done_values(reports) -> list[int]:
    return [done for done, _ in reports if done is not None]


def test_gmail_progress_after_a_resume_carries_on_from_what_was_stored(
    gmail_account, gmail_mailbox, monkeypatch, settings
):
    """The counter used to restart from zero after a resume ("104 of 3,209" with 602 stored)."""
    from mailbox import store
    from providers.google import mail as gmail

    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 0
    settings.GMAIL_BATCH_SIZE = 10
    settings.GMAIL_CONCURRENCY = 1
    monkeypatch.setattr(gmail, "STORE_GROUP", 20)
    gmail_mailbox.seed(230)
    reports = _progress_spy(monkeypatch)
    real, calls = store.messages_upsert, []

    def dying(**kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise _Killed
        return real(**kwargs)

    monkeypatch.setattr(store, "messages_upsert", dying)
    with pytest.raises(_Killed):
        sync.account_sync(account_id=gmail_account.pk)
    monkeypatch.setattr(store, "messages_upsert", real)
    before = SyncState.objects.get(account=gmail_account).progress_done
    assert 0 < before == Message.objects.filter(account=gmail_account).count() < 230
    SyncState.objects.filter(account=gmail_account).update(lock_owner="")  # as if its lock had lapsed
    gmail_mailbox.deliver(subject="arrived meanwhile")
    reports_before = len(reports)
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    done = _done_values(reports)
    assert done == sorted(done) and min(_done_values(reports[reports_before:])) >= before
    state = SyncState.objects.get(account=gmail_account)
    assert state.progress_done == state.progress_total == Message.objects.filter(account=gmail_account).count() == 231


@pytest.mark.dovecot
def test_outlook_progress_counts_mail_in_two_folders_once(dovecot, outlook_account, monkeypatch):

    account = outlook_account()
    inbox = dovecot.seed(account.email, 60)
    with dovecot.client(account.email, folder="INBOX") as imap:
        imap.copy(inbox[:15], "Archive")
    reports = _progress_spy(monkeypatch)
    outlook_client(account, chunk_size=10).full_sync()
    done = _done_values(reports)
    assert done == sorted(done) and all(d <= t for d, t in reports if d is not None and t is not None)
    state = SyncState.objects.get(account=account)
    assert Message.objects.filter(account=account).count() == 60
    assert (state.progress_done, state.progress_total) == (60, 60)  # not 75: 15 of them are in two folders
