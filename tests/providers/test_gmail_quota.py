"""Gmail's quota shared by worker processes: real processes, each with a real GmailClient, against the sandbox
Gmail API over HTTP with its quota emulation on (250 units per moving second per user, 429 beyond), paced
through Redis or through the state file of the embedded default."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.quota import Load, sandbox_user, worker_processes
from providers import registry
from providers.google.quota import QUOTA_UNITS_PER_SECOND, QuotaEntry, Rules, quota_pacer, quota_store

REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('MAILHUB_TEST_QUOTA_REDIS_DB', '13')}"


@pytest.fixture(params=["state_file", "redis"])
def quota_backend(request, settings, tmp_path) -> Iterator[dict[str, Any]]:
    """Where the pacer keeps its windows, for this process (``settings``) and for the workers it starts."""
    if request.param == "state_file":
        backend = {"REDIS_URL": "", "GMAIL_QUOTA_STATE_FILE": str(tmp_path / "gmail-quota.json")}
        for name, value in backend.items():
            setattr(settings, name, value)
        yield backend
        return
    # One Redis database for these tests: a test in another xdist worker waits for its turn (the project window
    # spans every user, so two tests at once would share it).
    with open(Path(tempfile.gettempdir()) / f"mailhub-gmail-quota-{REDIS_URL.rsplit('/', 1)[1]}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        redis.Redis.from_url(REDIS_URL).flushdb()
        settings.REDIS_URL = REDIS_URL
        yield {"REDIS_URL": REDIS_URL}


@pytest.fixture
def quota_sandbox(sandbox_settings):
    """The sandbox Gmail enforcing Google's 250 units per moving second (a test before may have changed it: the
    sandbox's reset leaves the Gmail store's settings alone), with no failures injected."""
    store = sandbox_settings.gmail
    store.clear_failures()
    store.quota_units_per_second = QUOTA_UNITS_PER_SECOND
    store.quota_enabled = True
    yield sandbox_settings
    store.quota_enabled = False


def _user(sandbox, *, messages: int = 40) -> tuple[str, str, tuple[str, ...]]:
    email = f"quota.{uuid.uuid4().hex[:10]}@gmail.com"
    token, ids = sandbox_user(sandbox, email=email, messages=messages)
    return email, token, ids


def _loads(sandbox, backend: dict[str, Any], *, users: int, processes: int, seconds: float, **kwargs) -> list[Load]:
    settings = {"GOOGLE_API_ROOT": sandbox.env()["GOOGLE_API_ROOT"], **backend}
    loads = []
    for _ in range(users):
        email, token, ids = _user(sandbox)
        loads += [Load(email=email, token=token, ids=ids, seconds=seconds, settings=settings, **kwargs)] * processes
    return loads


def test_four_worker_processes_syncing_one_user_draw_no_429(quota_sandbox, quota_backend):
    loads = _loads(quota_sandbox, quota_backend, users=1, processes=4, seconds=4)
    with worker_processes(loads) as processes:
        pass
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    stats = quota_sandbox.gmail.stats(loads[0].email)
    assert stats.get("throttled", 0) == 0, stats
    assert stats["units"] >= 400, "the workers should have used the quota for most of the 4 seconds"


def test_pacing_each_process_on_its_own_would_draw_429s(quota_sandbox, tmp_path):
    """The control for the test above: the same four workers, each counting in a state file of its own (as
    when the pacer lived in process memory), overrun the user's quota."""
    loads = [
        replace(load, settings={**load.settings, "GMAIL_QUOTA_STATE_FILE": str(tmp_path / f"{n}.json")})
        for n, load in enumerate(_loads(quota_sandbox, {"REDIS_URL": ""}, users=1, processes=4, seconds=2))
    ]
    with worker_processes(loads):
        pass
    assert quota_sandbox.gmail.stats(loads[0].email).get("throttled", 0) > 0


def test_the_project_limit_holds_across_users_and_processes(quota_sandbox, quota_backend):
    """Two users, two processes each, a project limit of 300 units a minute: for the first minute all of them
    together get 300 units, though each user alone could have 250 a second."""
    loads = _loads(quota_sandbox, quota_backend, users=2, processes=2, seconds=3, project_limit=300)
    with worker_processes(loads, join_timeout=0.5):  # left waiting for the minute to pass: stopped
        time.sleep(3.5)
    units = sum(quota_sandbox.gmail.stats(email).get("units", 0) for email in {load.email for load in loads})
    assert 200 <= units <= 300


def _hold(settings: dict[str, Any], email: str, units: int, holding: Event) -> None:
    """A worker that takes units for a request and dies before its answer (killed while it sleeps here)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhub.settings")
    import django

    django.setup()
    from django.conf import settings as django_settings

    for name, value in settings.items():
        setattr(django_settings, name, value)
    quota_pacer(email).acquire(units)
    holding.set()
    time.sleep(300)


@pytest.mark.timeout(60)  # units never freed would leave the acquire below waiting for ever
def test_a_dead_processes_units_in_flight_are_freed(settings, quota_backend):
    """A worker killed while its request was in flight: its units count until the expiry (2 s here, 60 s by
    default) on Redis; on the state file (one machine) they go as soon as its pid is gone."""
    settings.GMAIL_QUOTA_INFLIGHT_SECONDS = 2
    email = f"quota.{uuid.uuid4().hex[:10]}@gmail.com"
    context = multiprocessing.get_context("spawn")
    holding = context.Event()
    worker = context.Process(
        target=_hold, args=({**quota_backend, "GMAIL_QUOTA_INFLIGHT_SECONDS": 2}, email, 250, holding), daemon=True
    )
    worker.start()
    try:
        assert holding.wait(timeout=60)
        probe = QuotaEntry(key="probe", units=5, user_units=5, project_units=5)
        rules = Rules(user_limit=250, project_limit=1_200_000, inflight=2)
        assert quota_store().take(user=email, entry=probe, rules=rules) > 0, "the live worker's units count"
    finally:
        worker.kill()
        worker.join()
    started = time.monotonic()
    quota_pacer(email).acquire(5)
    waited = time.monotonic() - started
    if quota_backend["REDIS_URL"]:
        assert 0.5 <= waited <= 3.5
    else:
        assert waited < 0.5


def test_the_saved_project_limit_reaches_the_gmail_client(google_app, sandbox_settings):
    google_app.quota_units_per_minute = 600_000
    google_app.save()
    account = type("Account", (), {"pk": 1, "email": "someone@gmail.com"})()
    client = registry.get("google").mail_client(account=account, access_token=lambda **_: "t", local=None)  # type: ignore[arg-type]
    assert client.pacer.project_limit == 600_000
