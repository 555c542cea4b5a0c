"""Shared fixtures. Personas (after healthchecks): Alice owns mailboxes, Bob has his own, Charlie has none."""

import os

import pytest
from django.contrib.auth import get_user_model

# Tasks queued by the code under test go to an in-memory broker (Celery reads this variable
# directly), unless a test points the app at the real Redis and starts a worker itself.
os.environ.setdefault("CELERY_BROKER_URL", "memory://")

# Each area keeps its fixtures in tests/fixtures/<area>.py; list the module here.
pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.mail",
    "tests.fixtures.ui",
    "tests.fixtures.sandbox",
    "tests.fixtures.dovecot",
    "tests.fixtures.gmail_api",
    "tests.fixtures.outbox",
]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """SQLite tests use a file, not shared-cache memory: there a second thread (a Celery worker, a concurrent
    sync) gets "database table is locked" at once instead of waiting like it does in production."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        # MAILHUB_TEST_SQLITE: a fixed file, for `--reuse-db` (mutation runs start each run from a migrated copy).
        name = os.environ.get("MAILHUB_TEST_SQLITE") or str(tmp_path_factory.mktemp("db") / "test.sqlite3")
        database.setdefault("TEST", {})["NAME"] = name


@pytest.fixture
def eager_celery():
    """Run queued tasks at once in the calling process (tests without a worker): sends and write-backs happen."""
    from mailhub.celery import app as celery_app

    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _rate_limits_start_at_zero():
    """Rate limits count in the cache (process memory in tests): every test starts with none used."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _celery_joins_allowed():
    """An in-process worker (``start_worker``) may set Celery's process-wide "inside a task" flag while it starts
    and leave it set; a later test's ``result.get()`` would then refuse to run. Each test starts with it clear."""
    from celery import _state

    _state._set_task_join_will_block(False)
    yield


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", "alice@example.org", "alice-password-1")


@pytest.fixture
def sends_at_once(alice):
    """Alice's Send sends at once (undo send off): for tests whose tasks run eagerly, with no worker to run
    a task at its time."""
    from mailbox.models import SendingPreferences

    return SendingPreferences.objects.create(user=alice, undo_send_seconds=0)


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", "bob@example.org", "bob-password-1")


@pytest.fixture
def charlie(db):
    return get_user_model().objects.create_user("charlie", "charlie@example.org", "charlie-password-1")


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.org", "admin-password-1")
