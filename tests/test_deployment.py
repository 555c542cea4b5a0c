"""The two commands and the container set-up point at things that exist."""

import json
import os
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.utils.module_loading import import_string

from mailhub.run import process_commands

ROOT = Path(settings.BASE_DIR)


def _check_command(argv: list[str]) -> None:
    program = argv[0]
    assert program in {"python", "gunicorn", "celery"}, argv
    assert (Path(sys.executable).parent / program).exists()
    if "manage.py" in argv:
        assert (ROOT / "manage.py").exists()
    for i, arg in enumerate(argv):
        if arg in {"-A", "--app"}:
            from mailhub import celery_app

            assert argv[i + 1] == "mailhub" and celery_app.main == "mailhub"
        if arg.endswith(".wsgi"):
            assert callable(import_string(f"{arg}.application"))
        if arg == "migrate":
            assert argv[i - 1] == "manage.py"


def test_compose_runs_web_worker_beat_db_and_redis_from_one_image():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "bulk", "watch", "beat", "db", "redis"} <= set(services)
    assert services["web"]["build"] == "." and (ROOT / "Dockerfile").exists()
    assert len({services[name]["image"] for name in ("web", "worker", "bulk", "watch", "beat")}) == 1


def _queues(argv: list[str]) -> set[str]:
    return set(argv[argv.index("-Q") + 1].split(",")) if "-Q" in argv else set()


def test_every_queue_tasks_are_sent_to_has_a_worker_in_make_run_and_in_compose():
    from mailbox import tasks

    sent_to = {"celery", tasks.FIRST_SYNC_QUEUE, tasks.PERIODIC_SYNC_QUEUE, tasks.WATCH_QUEUE}
    served = set().union(*(_queues(argv) for argv in process_commands().values()))
    assert served == sent_to
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"].values()
    served = set().union(*(_queues(shlex.split(s["command"])) for s in services if "worker" in s.get("command", "")))
    assert served == sent_to
    watch = process_commands()["watch"]
    assert watch[watch.index("-P") + 1] == "threads"  # a watcher holds its thread for as long as it runs


@pytest.mark.parametrize("service", ["web", "worker", "bulk", "watch", "beat"])
def test_compose_commands_exist_in_the_project(service):
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]["command"]
    for part in command.split("&&") if isinstance(command, str) else [command]:
        argv = shlex.split(part.replace('sh -c "', "").strip('" '))
        _check_command(argv)


@pytest.mark.parametrize("name", ["web", "worker", "bulk", "watch", "beat"])
def test_make_run_starts_existing_programs(name):
    python, dash_m, *argv = process_commands(bind="127.0.0.1:8123")[name]
    assert Path(python).exists() and dash_m == "-m"
    _check_command(argv)


def test_beat_schedules_the_periodic_sync_task():
    from mailhub import celery_app

    schedule = settings.CELERY_BEAT_SCHEDULE["sync-all-accounts"]
    assert schedule["schedule"] == settings.MAILHUB_SYNC_INTERVAL_SECONDS
    celery_app.loader.import_default_modules()
    assert schedule["task"] in celery_app.tasks


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_blocks = readme.split("```")[1:4:2]
    assert "make run" in first_blocks[0] and "make test" in first_blocks[1]


# --- Ready for the internet --------------------------------------------------------------------------------


def _manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # DJANGO_ALLOW_ASYNC_UNSAFE: set by the browser fixture in this process, refused by check --deploy.
    unset = {"SITE_ORIGIN", "DATABASE_URL", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ |= {"MAILHUB_VAR_DIR": str(tmp_path / "var"), "DEBUG": "false", **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True,  # noqa: S603
                          text=True, timeout=120)  # fmt: skip


def test_check_deploy_prints_no_warning_with_an_https_origin(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", SITE_ORIGIN="https://mail.example.com")
    assert result.returncode == 0, result.stderr
    # Silenced: only django-ratelimit's notes on the cache (see CACHES in settings), nothing of Django's own.
    assert result.stdout.strip() == "System check identified no issues (2 silenced)."


def test_without_an_https_origin_check_deploy_names_what_is_missing(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", SITE_ORIGIN="http://127.0.0.1:8000")
    for warning in ["security.W004", "security.W008", "security.W012", "security.W016"]:
        assert warning in result.stderr
    assert "security.W019" not in result.stderr  # X-Frame-Options is DENY either way


def test_var_is_private_and_the_sqlite_file_is_0600(tmp_path):
    var = tmp_path / "var"
    assert _manage(tmp_path, "migrate", "--noinput").returncode == 0
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    database = var / "mailhub.sqlite3"
    assert database.stat().st_size > 0
    connection = sqlite3.connect(database)  # as the app does: WAL, so -wal and -shm files exist while open
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE probe (x)")
        files = [database, *var.glob("mailhub.sqlite3-*"), var / "secret_key", var / "encryption_key"]
        assert len(files) == 5
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        connection.close()
    # An install from before this rule is tightened at the next start.
    var.chmod(0o755)
    database.chmod(0o644)
    assert _manage(tmp_path, "check").returncode == 0
    assert stat.S_IMODE(var.stat().st_mode) == 0o700 and stat.S_IMODE(database.stat().st_mode) == 0o600


def test_compose_puts_caddy_in_front_and_takes_the_host_from_the_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:") and {"80:80", "443:443"} <= set(proxy["ports"])
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    published = [name for name, service in services.items() if service.get("ports")]
    assert published == ["proxy"]  # gunicorn, PostgreSQL and Redis are reachable only inside the network
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["ALLOWED_HOSTS"].startswith("${MAILHUB_DOMAIN") and "*" not in environment["ALLOWED_HOSTS"]
        assert environment["SITE_ORIGIN"].startswith("https://${MAILHUB_DOMAIN")
        assert environment["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto"
        assert environment["MAILHUB_PROXY_COUNT"] == "1"
    assert "-c python:mailhub.gunicorn_conf" in services["web"]["command"]
    assert "-c python:mailhub.gunicorn_conf" in " ".join(yaml.safe_load("[" + _dockerfile_cmd() + "]")[0])


def _dockerfile_cmd() -> str:
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return line.removeprefix("CMD ")


def test_the_caddyfile_is_valid_and_proxies_to_gunicorn(tmp_path):
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("Debian's caddy is not installed (make test installs it as root: apt-get install caddy)")
    env = {**os.environ, "MAILHUB_DOMAIN": "mail.example.com", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    adapted = subprocess.run([caddy, "adapt", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"],  # noqa: S603
                             env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    config = json.loads(adapted.stdout)
    server = next(iter(config["apps"]["http"]["servers"].values()))
    assert server["listen"] == [":443"]
    routes = json.dumps(server["routes"])
    assert '"host": ["mail.example.com"]' in routes and '"dial": "web:8000"' in routes
    assert "log" not in json.dumps(config).lower().replace("logger", "")  # no second access log with queries


def test_gunicorn_access_log_has_no_query_string_or_referer():
    from mailhub import gunicorn_conf

    assert "%(r)s" not in gunicorn_conf.access_log_format and "%(q)s" not in gunicorn_conf.access_log_format
    assert "%(f)s" not in gunicorn_conf.access_log_format and "%(U)s" in gunicorn_conf.access_log_format
