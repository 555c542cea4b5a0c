"""`make run`: the web app, the Celery workers (syncs and sends, first syncs, watchers) and beat in one
foreground command.

Stops all of them when any of them exits or on Ctrl-C.
"""

import os
import signal
import subprocess
import sys
import time

DEFAULT_BIND = "127.0.0.1:8000"


def process_commands(*, bind: str = DEFAULT_BIND) -> dict[str, list[str]]:
    celery = [sys.executable, "-m", "celery", "-A", "mailhub"]
    return {
        # Access log format, threads and secret redaction: mailhub/gunicorn_conf.py (docker-compose uses it too).
        "web": [sys.executable, "-m", "gunicorn", "-c", "python:mailhub.gunicorn_conf", "mailhub.wsgi", "--bind", bind],
        # Syncs, sends and write-back; first syncs on a worker of their own; watchers (long-running, many
        # connections each) on threads of their own. Queue names: mailbox/tasks.py.
        "worker": [*celery, "worker", "-l", "info", "-c", "2", "-Q", "celery,poll", "-n", "worker@%h"],
        "bulk": [*celery, "worker", "-l", "info", "-c", "1", "-Q", "bulk", "-n", "bulk@%h"],
        "watch": [*celery, "worker", "-l", "info", "-P", "threads", "-c", "4", "-Q", "watch", "-n", "watch@%h"],
        "beat": [*celery, "beat", "-l", "info"],
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_all(*, extra_env: dict[str, str] | None = None) -> int:
    """Start web, the workers and beat with ``extra_env`` added; return when one exits or on Ctrl-C."""
    env = {**os.environ, **(extra_env or {})}
    bind = env.get("MAILHUB_BIND", DEFAULT_BIND)
    commands = process_commands(bind=bind)
    children = {name: subprocess.Popen(command, env=env) for name, command in commands.items()}  # noqa: S603
    print(f"Mailhub is starting at http://{bind}/ (Ctrl-C stops web, workers and beat)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, `timeout`, a service manager: stop the children too
    try:
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    failed = [name for name, child in children.items() if child.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_all())
