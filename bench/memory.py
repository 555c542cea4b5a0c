"""Peak memory for storing one 50 MB message through the real store path (``store.messages_upsert``).

Each case runs in a subprocess of its own, so its peak RSS (``ru_maxrss``) is the store's and not the
parent's; the message is written to a file first and read by the child before it measures (the peak is
the kernel's VmHWM, reset just before storing). Figures:
``rss_before_mb`` (the child with the message's bytes in memory, before storing), ``peak_rss_mb``,
``peak_over_before_mb`` (what storing took) and ``times_message_size`` (that, over the message's size).
The child uses a throwaway database like the other sections: a temp SQLite file, and ``test_<name>`` on
PostgreSQL when DATABASE_URL points there (then both are measured). ``BENCH_MEMORY_MB`` sets the size.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = {
    # A 50 MB attachment (base64 makes the message about 67 MB).
    "attachment": {"text_share": 0.0},
    # 50 MB of message: a long text body (some non-ASCII) and an attachment.
    "text_and_attachment": {"text_share": 0.3},
}


def _message(size_mb: int, *, text_share: float) -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.org", "owner@example.org", "A big one"
    msg["Message-ID"] = "<bench-memory@example.org>"
    line = "Bericht über das Quartal, Zeile für Zeile; the quarterly report, line by line.\n"
    text_bytes = int(size_mb * 2**20 * text_share)
    msg.set_content(line * max(text_bytes // len(line.encode()), 1))
    attachment = size_mb * 2**20 if not text_share else int((size_mb * 2**20 - text_bytes * 1.02) * 3 / 4)
    msg.add_attachment(os.urandom(attachment), maintype="application", subtype="zip", filename="data.zip")
    return msg.as_bytes()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's peak RSS since :func:`_peak_reset` (VmHWM; ``ru_maxrss`` would include the parent's)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # "5": reset the peak RSS to the current RSS
        handle.write("5")


def _child(path: str) -> dict:
    """Store the message in ``path`` once, in this (fresh) process; its memory figures."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhub.settings")
    import django

    django.setup()
    from django.db import connection

    tmp = Path(tempfile.mkdtemp(prefix="mailhub-bench-memory-"))
    test_settings = connection.settings_dict.setdefault("TEST", {})
    if connection.vendor == "sqlite":
        test_settings["NAME"] = str(tmp / "bench.sqlite3")
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        from django.contrib.auth import get_user_model
        from django.test import override_settings

        from accounts.models import MailAccount
        from mailbox import store
        from mailbox.models import Message

        with override_settings(MEDIA_ROOT=str(tmp / "media")):
            user = get_user_model().objects.create_user("bench-memory")
            account = MailAccount.objects.create(user=user, provider="google", email="owner@example.org")
            raw = Path(path).read_bytes()
            peak_before = _peak_rss_mb()
            _peak_reset()
            before = _rss_mb()
            sampled = [before]
            done = threading.Event()

            def sample() -> None:  # ru_maxrss is the figure; this checks it is the store's own peak
                while not done.wait(0.005):
                    sampled.append(_rss_mb())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            store.messages_upsert(account=account, items=[store.IncomingMessage(remote_id="big", raw=raw)])
            seconds = time.perf_counter() - started
            done.set()
            sampler.join()
            peak, after = _peak_rss_mb(), _rss_mb()
            stored = Message.objects.get(account=account, remote_id="big")
            assert stored.raw == raw, "the stored message differs from the one given"
            return {
                "database": connection.vendor,
                "message_mb": round(len(raw) / 2**20, 1),
                "attachments_mb": round(sum(a.size for a in stored.attachments.all()) / 2**20, 1),
                "body_text_mb": round(len(stored.body_text.encode()) / 2**20, 1),
                "rss_before_mb": round(before, 1),
                "peak_rss_mb": round(peak, 1),
                "peak_over_before_mb": round(peak - before, 1),
                "times_message_size": round((peak - before) / (len(raw) / 2**20), 2),
                "sampled_peak_over_before_mb": round(max(sampled) - before, 1),
                "process_peak_before_storing_mb": round(peak_before, 1),
                "rss_after_mb": round(after, 1),
                "seconds": round(seconds, 2),
            }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run() -> dict:
    from django.conf import settings

    size_mb = int(os.environ.get("BENCH_MEMORY_MB", "50"))
    root = Path(__file__).resolve().parents[1]
    databases = {"sqlite": "sqlite:///unused-the-child-uses-a-temp-file.sqlite3"}
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        databases["postgresql"] = os.environ["DATABASE_URL"]
    figures: dict = {"message_size_mb": size_mb, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="mailhub-bench-memory-") as tmp:
        for case, options in CASES.items():
            path = Path(tmp) / f"{case}.eml"
            path.write_bytes(_message(size_mb, **options))
            for vendor, url in databases.items():
                env = {**os.environ, "DATABASE_URL": url, "MAILHUB_VAR_DIR": str(Path(tmp) / "var")}
                result = subprocess.run(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", "bench.memory", "--child", str(path)],
                    cwd=root,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode:
                    raise RuntimeError(f"bench memory child ({case}, {vendor}) failed:\n{result.stderr[-3000:]}")
                figures["cases"][f"{case}/{vendor}"] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(_child(sys.argv[2])))
