"""Kill-resume trials: a first sync running in its own process is SIGKILLed at a random point, then resumed
to completion by another process; afterwards the database must equal the mailbox exactly.

Per provider, ``KILL_RESUME_TRIALS`` (default 10) kills against a fresh mailbox each: Gmail against the
sandbox Gmail API, Outlook against Dovecot (mail in two folders, messages sharing Message-ID and Date).
Each trial picks how many messages must be stored before the kill (0 to all but one) plus up to 20 ms,
kills the worker with SIGKILL (no cleanup of any kind), checks its lock still holds (another sync is
"busy"), ends the lock's term instead of waiting for it, and resumes in a new worker while sampling the
progress counter, which must only grow and end equal to the messages stored. Then the mailbox changes
and the next sync must follow it exactly too.

Workers are forked from one process that has already set Django up (as Celery's prefork pool does), so a
trial costs its sync and not an interpreter start. A failure names the seed: ``KILL_RESUME_SEED=<seed>``
replays the same kill points. Runs on PostgreSQL as well (``DATABASE_URL``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from mailbox import sync
from mailbox.models import Message, SyncState
from providers.imap.connection import content_remote_id

pytestmark = [pytest.mark.django_db(transaction=True)]

TRIALS = int(os.environ.get("KILL_RESUME_TRIALS", "10"))
ROOT = Path(__file__).resolve().parents[2]

# Reads "sync <account id>" and "poll <pid>" lines; answers with the forked worker's pid, and with
# "running" or the worker's exit code (negative: killed by that signal).
ZYGOTE = r"""
import os, sys, traceback
import django
django.setup()
from django.conf import settings
from django.db import connections
# Paced below the 80 messages' quota cost: the sync pauses between bursts on any machine, so a kill aimed
# at a random point lands mid-sync instead of after a fast machine already finished.
settings.GMAIL_QUOTA_UNITS_PER_SECOND = 150
settings.GMAIL_BATCH_SIZE = 10
import providers.google.mail
providers.google.mail.STORE_GROUP = 10  # progress recorded every 10 messages: many places to die
from providers.imap.client import ImapMailClient
ImapMailClient.__init__.__kwdefaults__["chunk_size"] = 10
from mailbox.sync import account_sync

connections.close_all()
print("ready", flush=True)
for line in sys.stdin:
    command, argument = line.split()
    if command == "sync":
        pid = os.fork()
        if pid == 0:
            code = 4
            try:
                code = 0 if account_sync(account_id=int(argument)).outcome == "ok" else 3
            except BaseException:
                traceback.print_exc()
            os._exit(code)
        print(pid, flush=True)
    elif command == "poll":
        pid, status = os.waitpid(int(argument), os.WNOHANG)
        print("running" if pid == 0 else os.waitstatus_to_exitcode(status), flush=True)
"""


class Workers:
    """Sync workers forked on demand from one process with Django set up."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._answer() == "ready"

    def _answer(self) -> str:
        line = self.process.stdout.readline().strip()
        assert line, "the worker parent died"
        return line

    def _ask(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._answer()

    def start(self, account_id: int) -> int:
        return int(self._ask(f"sync {account_id}"))

    def exit_code(self, pid: int) -> int | None:
        answer = self._ask(f"poll {pid}")
        return None if answer == "running" else int(answer)

    def wait(self, pid: int, *, timeout: float = 120, each: Callable[[], None] = lambda: None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            each()
            code = self.exit_code(pid)
            if code is not None:
                return code
            time.sleep(0.02)  # the sandbox serving the worker runs in this process: leave it the CPU
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"worker {pid} still running after {timeout}s")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def workers(extra_env: dict[str, str], settings) -> Iterator[Workers]:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        **extra_env,
        "DATABASE_URL": url,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DJANGO_SETTINGS_MODULE": "mailhub.settings",
        "LOG_LEVEL": "ERROR",
    }
    pool = Workers(env)
    try:
        yield pool
    finally:
        pool.close()


def trial_seed() -> int:
    return int(os.environ.get("KILL_RESUME_SEED") or random.SystemRandom().randrange(2**32))


def kill_and_resume(pool: Workers, account, *, messages: int, rng: random.Random) -> dict:
    """Start a first sync, SIGKILL it at a random point, resume it in another worker; returns what was seen."""
    target = rng.randrange(messages)
    linger = rng.uniform(0, 0.02)
    stored = Message.objects.filter(account=account)
    pid = pool.start(account.pk)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and stored.count() < target and pool.exit_code(pid) is None:
        time.sleep(0.005)
    time.sleep(linger)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    killed_code = pool.wait(pid)
    state = SyncState.objects.get(account=account)
    at_kill = (state.progress_done, state.progress_total)
    stored_at_kill = stored.count()
    if state.lock_owner:  # nobody released the dead worker's lock: it holds until it expires
        assert sync.account_sync(account_id=account.pk).outcome == "busy"
    SyncState.objects.filter(account=account).update(lock_expires_at=timezone.now() - timedelta(seconds=1))

    samples: list[tuple[int, int]] = [at_kill]

    def sample() -> None:
        done, total = SyncState.objects.filter(account=account).values_list("progress_done", "progress_total").get()
        if (done, total) != samples[-1]:
            samples.append((done, total))

    resumed = pool.start(account.pk)
    code = pool.wait(resumed, each=sample)
    sample()
    state.refresh_from_db()
    return {
        "target": target,
        "killed": killed_code == -signal.SIGKILL,
        "stored_at_kill": stored_at_kill,
        "resume_exit": code,
        "samples": samples,
        "stage": state.stage,
        "lock": state.lock_owner,
    }


def trials(outcomes: list[dict]) -> Iterator[int]:
    """Trial numbers until ``TRIALS`` workers were really killed mid-sync (one that finished before the kill
    landed is checked all the same but does not count), giving up after twice as many."""
    trial = 0
    while sum(o["killed"] for o in outcomes) < TRIALS and trial < 2 * TRIALS:
        yield trial
        trial += 1
    assert sum(o["killed"] for o in outcomes) >= TRIALS, [(o["target"], o["stored_at_kill"]) for o in outcomes]


def progress_problem(seen: dict, *, expected: int, label: str) -> str | None:
    """Why the progress counter (done, total) seen from the kill to the end was wrong, or None."""
    samples = seen["samples"]
    dones = [done for done, _ in samples]
    if dones != sorted(dones):
        return f"{label}: went back: {samples}"
    if any(done > total for done, total in samples if total):
        return f"{label}: done above total: {samples}"
    if samples[-1] != (expected, expected):
        return f"{label}: ended at {samples[-1]}, not ({expected}, {expected}): {samples}"
    return None


@pytest.mark.dovecot
def test_outlook_sync_killed_at_random_points_resumes_to_exactly_the_mailbox(
    dovecot, outlook_account, sandbox, settings
):
    from sandbox.corpus import generate_messages
    from tests.providers.test_outlook_identity import ARRIVED, SHARED

    seed = trial_seed()
    rng = random.Random(seed)
    env = {
        **sandbox.env(),
        "MICROSOFT_IMAP_HOST": "127.0.0.1",
        "MICROSOFT_IMAP_PORT": str(dovecot.imaps_port),
        "MICROSOFT_IMAP_SECURITY": "ssl",
    }
    outcomes, progress = [], []
    with workers(env, settings) as pool:
        for trial in trials(outcomes):
            label = f"trial {trial}, KILL_RESUME_SEED={seed}"
            account = outlook_account()
            inbox = [
                (raw, _flags(i), None)
                for i, raw in enumerate(generate_messages(40, to_address=account.email, seed=trial))
            ]
            inbox += [(raw, (), ARRIVED) for raw in SHARED]
            dovecot.append_many(account.email, inbox, folder="INBOX")
            archive = inbox[:10] + [
                (raw, _flags(i + 1), None)
                for i, raw in enumerate(generate_messages(10, to_address=account.email, seed=1000 + trial))
            ]
            dovecot.append_many(account.email, archive, folder="Archive")
            rows = len(inbox) + 10  # distinct byte strings: what the progress counter ends at

            seen = kill_and_resume(pool, account, messages=rows, rng=rng)
            outcomes.append(seen)
            assert seen["resume_exit"] == 0, label
            assert seen["stage"] == SyncState.Stage.INCREMENTAL and not seen["lock"], label
            assert_outlook_store_equals_server(dovecot, account, label=label)
            progress.append(progress_problem(seen, expected=rows, label=label))
            # Then the mailbox changes and the next (incremental) sync follows it.
            dovecot.seed(account.email, 1, seed=2000 + trial)
            own = dovecot.uids(account.email, "Archive")[-2:]  # only in Archive: a row has one set of flags
            dovecot.set_flags(account.email, "Archive", own, [b"\\Flagged", b"\\Seen"])
            dovecot.expunge(account.email, "INBOX", [dovecot.uids(account.email, "INBOX")[0]])  # also in Archive
            assert sync.account_sync(account_id=account.pk).outcome == "ok"
            assert_outlook_store_equals_server(dovecot, account, label=label)
    wrong = [problem for problem in progress if problem]
    assert not wrong, "progress counter wrong after a resume:\n" + "\n".join(wrong)


def _flags(index: int) -> tuple[bytes, ...]:
    return (b"\\Seen",) * (index % 3 == 0) + (b"\\Flagged",) * (index % 5 == 0)


def assert_outlook_store_equals_server(dovecot, account, *, label: str) -> None:
    """Per folder UID -> (key of its bytes, read, starred) as on the server; every row's bytes; nothing else."""
    from mailbox.models import MessageFolder

    expected_rows: dict[str, bytes] = {}
    for folder in ("INBOX", "Archive"):
        with dovecot.client(account.email) as imap:
            imap.select_folder(folder, readonly=True)
            data = imap.fetch(imap.search("ALL"), ["BODY.PEEK[]", "FLAGS"])
        raws = {uid: bytes(item[b"BODY[]"]) for uid, item in data.items()}
        server = {
            uid: (content_remote_id(raws[uid]), b"\\Seen" in item[b"FLAGS"], b"\\Flagged" in item[b"FLAGS"])
            for uid, item in data.items()
        }
        expected_rows.update({content_remote_id(raw): raw for raw in raws.values()})
        stored = {
            uid: (remote_id, read, starred)
            for uid, remote_id, read, starred in MessageFolder.objects.filter(
                folder__account=account, folder__remote_id=folder
            ).values_list("uid", "message__remote_id", "message__is_read", "message__is_starred")
        }
        assert stored == server, f"{label}: {folder} differs"
    rows = {m.remote_id: m.raw for m in Message.objects.filter(account=account)}
    assert rows == expected_rows, f"{label}: rows differ"


def test_gmail_sync_killed_at_random_points_resumes_to_exactly_the_mailbox(
    alice, google_app, sandbox_settings, settings
):
    from tests.fixtures.mail import GmailMailbox, gmail_account_create
    from tests.providers.test_gmail_sync import _assert_db_equals_mailbox

    seed = trial_seed()
    rng = random.Random(seed)
    messages = 80
    with workers(sandbox_settings.env(), settings) as pool:
        outcomes, progress = [], []
        for trial in trials(outcomes):
            label = f"trial {trial}, KILL_RESUME_SEED={seed}"
            account = gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice)
            mailbox = GmailMailbox(store=sandbox_settings.gmail, email=account.email)
            mailbox.seed(messages)

            seen = kill_and_resume(pool, account, messages=messages, rng=rng)
            outcomes.append(seen)
            assert seen["resume_exit"] == 0, label
            assert seen["stage"] == SyncState.Stage.INCREMENTAL and not seen["lock"], label
            _assert_db_equals_mailbox(account, mailbox)
            for message in Message.objects.filter(account=account):
                assert message.raw == mailbox.store.message(mailbox.email, message.remote_id).raw, label
            progress.append(progress_problem(seen, expected=messages, label=label))
            # Then the mailbox changes and the next (incremental) sync follows it.
            ids = sorted(mailbox.ids())
            mailbox.deliver(subject=f"after trial {trial}")
            mailbox.store.modify(mailbox.email, ids[0], add=["STARRED"])
            mailbox.store.delete(mailbox.email, ids[1])
            assert sync.account_sync(account_id=account.pk).outcome == "ok"
            _assert_db_equals_mailbox(account, mailbox)
    wrong = [problem for problem in progress if problem]
    assert not wrong, "progress counter wrong after a resume:\n" + "\n".join(wrong)
