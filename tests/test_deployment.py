"""The two commands and the container set-up point at things that exist."""

import shlex
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
    assert {"web", "worker", "beat", "db", "redis"} <= set(services)
    assert services["web"]["build"] == "." and (ROOT / "Dockerfile").exists()
    assert len({services[name]["image"] for name in ("web", "worker", "beat")}) == 1


@pytest.mark.parametrize("service", ["web", "worker", "beat"])
def test_compose_commands_exist_in_the_project(service):
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]["command"]
    for part in command.split("&&") if isinstance(command, str) else [command]:
        argv = shlex.split(part.replace('sh -c "', "").strip('" '))
        _check_command(argv)


@pytest.mark.parametrize("name", ["web", "worker", "beat"])
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
