"""A warm process that forks one pytest run per mutant, so a mutant does not pay for importing the world.

``python -m mutation.zygote SOCKET`` imports pytest, Django and the other third-party packages the tests
use (never this project's own modules: the child must import the mutated file from disk), then serves
requests on the UNIX socket ``SOCKET``: each is ``{"cwd", "argv", "env", "timeout"}`` as one JSON line;
the server forks, the child runs ``pytest.main(argv)`` and exits with its code, and the server answers
that code (or 124 when the child ran past ``timeout`` and was killed). Starting Python and these
imports took about half of a mutant's time on the shared two-core machine.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import time

WARM_IMPORTS = [
    "pytest",
    "_pytest.python",
    "_pytest.fixtures",
    "_pytest.assertion.rewrite",
    "pytest_django",
    "pytest_django.plugin",
    "pytest_django.fixtures",
    "pytest_timeout",
    "xdist",
    "django",
    "django.conf",
    "django.db",
    "django.db.models",
    "django.http",
    "django.urls",
    "django.test",
    "django.core.serializers",
    "django.core.management",
    "django.db.backends.sqlite3.base",
    "django.template",
    "django.contrib.auth.hashers",
    "environ",
    "celery",
    "celery.app",
    "kombu",
    "redis",
    "psycopg",
    "googleapiclient.discovery",
    "googleapiclient.http",
    "google.oauth2.credentials",
    "google_auth_oauthlib.flow",
    "httplib2",
    "msal",
    "imapclient",
    "requests",
    "cryptography.fernet",
    "jwt",
    "nh3",
    "yaml",
    "aiosmtpd",
    "playwright.sync_api",
    "email.parser",
    "email.policy",
]


PROJECT_PACKAGES = {"mailhub", "mailbox", "accounts", "providers", "sandbox", "tests", "bench"}


def _child(request: dict) -> None:
    os.setpgid(0, 0)  # its own group: a timeout kills what it started too (Dovecot, workers)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path.insert(0, request["cwd"])
    output = os.open(request.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(output, 1)
    os.dup2(output, 2)
    import pytest

    code = 1
    try:
        code = int(pytest.main(request["argv"]))
    finally:
        os._exit(code)


def _run(request: dict) -> int:
    pid = os.fork()
    if pid == 0:
        _child(request)
    deadline = time.monotonic() + float(request.get("timeout", 600))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return 124
        time.sleep(0.02)


def serve(path: str) -> None:
    sys.dont_write_bytecode = True  # a mutant of the same size written in the same second must not reuse a .pyc
    for name in WARM_IMPORTS:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # The project's packages must come from the child's own import, from disk (``mailbox`` also names a
    # stdlib module, which would shadow our app if some package above had imported it).
    for name in [m for m in sys.modules if m.split(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            connection, _ = server.accept()
            with connection, connection.makefile("rwb") as stream:
                request = json.loads(stream.readline())
                stream.write(f"{_run(request)}\n".encode())
                stream.flush()
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def run(path: str, *, argv: list[str], env: dict[str, str], timeout: float, log: str = "") -> int:
    """Ask the zygote at ``path`` to run ``pytest argv`` in the current directory; its exit code."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        with client.makefile("rwb") as stream:
            request = {"cwd": os.getcwd(), "argv": argv, "env": env, "timeout": timeout, "log": log}
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            return int(stream.readline() or 1)


if __name__ == "__main__":
    serve(sys.argv[1])
