"""Gmail quota across worker processes: four processes fetch one user's messages against the sandbox Gmail API
(quota emulation on, 250 units per moving second) through real ``GmailClient``s sharing one pacer.

Figures: the units per second Gmail charged in the steady state (after a warm-up second or two) as a share of
the 250 units/s ceiling, and the 429s it answered. Runs on the state file (the embedded default); on Redis too
when ``BENCH_QUOTA_REDIS_URL`` names a database the bench may write to. ``BENCH_QUOTA_SECONDS`` sets the length.
Needs no database. ``worker_processes`` is also what the tests use to start workers.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from providers.google.quota import PROJECT_UNITS_PER_MINUTE, QUOTA_UNITS_PER_SECOND

PROCESSES = 4
WARM_UP_SECONDS = 2.0


@dataclass(frozen=True)
class Load:
    """What one worker process does: fetch ``ids`` of ``email`` (batches of messages.get) for ``seconds``."""

    email: str
    token: str
    ids: tuple[str, ...]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)  # GOOGLE_API_ROOT, REDIS_URL, GMAIL_QUOTA_STATE_FILE...
    project_limit: int = PROJECT_UNITS_PER_MINUTE


class _NoLocalStore:
    """The client asks its store only to keep a sync lock alive while it waits; there is no sync here."""

    def heartbeat(self) -> None:
        return None


def _account(email: str) -> Any:
    return type("Account", (), {"pk": 0, "email": email})()


def hammer(load: Load, ready: Barrier) -> None:
    """The body of one worker process (started with "spawn": a fresh interpreter, as a Celery worker is)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhub.settings")
    import django

    django.setup()
    from django.conf import settings

    from providers.google.mail import GmailClient

    for name, value in load.settings.items():
        setattr(settings, name, value)
    client = GmailClient(
        _account(load.email),
        access_token=lambda force_refresh=False: load.token,
        local=_NoLocalStore(),  # type: ignore[arg-type]
        project_limit=load.project_limit,
    )

    def build(message_id: str) -> Any:
        return client.service.users().messages().get(userId="me", id=message_id, format="minimal")

    ready.wait(timeout=120)
    deadline = time.monotonic() + load.seconds
    while time.monotonic() < deadline:
        # The sync's own fetch path: bounded batches, bounded concurrency, retries after 429s.
        for _ in client._fetch_stream(load.ids, build=build, method="messages.get"):
            if time.monotonic() >= deadline:
                break


@contextmanager
def worker_processes(loads: list[Load], *, join_timeout: float | None = None) -> Iterator[list[BaseProcess]]:
    """Start one process per load; yields once all of them are ready to fetch (they start together). On leaving,
    waits ``join_timeout`` for each (default: its time and 30 s) and kills any still running."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(len(loads) + 1)
    processes: list[BaseProcess] = [context.Process(target=hammer, args=(load, ready), daemon=True) for load in loads]
    for process in processes:
        process.start()
    try:
        ready.wait(timeout=120)
        yield processes
        for process in processes:
            process.join(timeout=max(load.seconds for load in loads) + 30 if join_timeout is None else join_timeout)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()


def sandbox_user(sandbox: Any, *, email: str, messages: int) -> tuple[str, tuple[str, ...]]:
    """A sandbox Gmail user with ``messages`` messages: its access token and message ids."""
    from sandbox.corpus import generate_messages

    sandbox.gmail.add_user(email)
    ids = sandbox.gmail.seed(email, generate_messages(messages, to_address=email))
    token = sandbox.tokens.issue(
        kind="access",
        provider="google",
        client_id="bench.apps.googleusercontent.com",
        email=email,
        scopes=("https://www.googleapis.com/auth/gmail.modify",),
        lifetime=3600,
    ).value
    return token, tuple(ids)


def _charges(store: Any, email: str, *, since: float, until: float) -> list[tuple[float, int]]:
    """(time, units charged so far) at each change of the sandbox's counter between ``since`` and ``until``."""
    seen: list[tuple[float, int]] = []
    while (now := time.monotonic()) < until:
        units = store.stats(email).get("units", 0)
        if now >= since and (not seen or units != seen[-1][1]):
            seen.append((now, units))
        time.sleep(0.005)
    return seen


def _measure(sandbox: Any, *, backend: dict[str, Any], seconds: float) -> dict:
    email = f"bench.quota.{uuid.uuid4().hex[:8]}@gmail.com"
    token, ids = sandbox_user(sandbox, email=email, messages=40)
    settings = {"GOOGLE_API_ROOT": sandbox.env()["GOOGLE_API_ROOT"], **backend}
    store = sandbox.gmail
    store.quota_enabled = True
    store.reset_stats()
    loads = [Load(email=email, token=token, ids=ids, seconds=seconds, settings=settings) for _ in range(PROCESSES)]
    with worker_processes(loads):
        started = time.monotonic()
        seen = _charges(store, email, since=started + WARM_UP_SECONDS, until=started + seconds - 0.2)
    stats = store.stats(email)
    store.quota_enabled = False
    # From one charge to another: the rate between two arrivals, whatever the phase the sampling started in.
    (first_at, first), (last_at, last) = seen[1], seen[-1]
    rate = (last - first) / (last_at - first_at)
    return {
        "processes": PROCESSES,
        "seconds_measured": round(last_at - first_at, 1),
        "units_per_second": round(rate, 1),
        "share_of_ceiling": round(rate / QUOTA_UNITS_PER_SECOND, 3),
        "throttled_429s": stats.get("throttled", 0),
        "http_requests": stats.get("http_requests", 0),
        "units_total": stats.get("units", 0),
    }


def run() -> dict:
    from sandbox.server import Sandbox

    seconds = float(os.environ.get("BENCH_QUOTA_SECONDS", "20"))
    with tempfile.TemporaryDirectory(prefix="mailhub-bench-quota-") as tmp_dir:
        tmp = Path(tmp_dir)
        backends: dict[str, dict[str, Any]] = {
            "state_file": {"REDIS_URL": "", "GMAIL_QUOTA_STATE_FILE": str(tmp / "gmail-quota.json")}
        }
        if os.environ.get("BENCH_QUOTA_REDIS_URL"):
            backends["redis"] = {"REDIS_URL": os.environ["BENCH_QUOTA_REDIS_URL"]}
        with Sandbox(tls_dir=tmp / "tls") as sandbox:
            figures: dict[str, Any] = {"ceiling_units_per_second": QUOTA_UNITS_PER_SECOND}
            for name, backend in backends.items():
                figures[name] = _measure(sandbox, backend=backend, seconds=seconds)
            return figures
