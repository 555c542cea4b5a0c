"""Adding a provider is one folder and one registry line: ``tests/fakeprovider/`` is a whole provider (its mail
kept in memory) that the engine, the models and the outbox take without any other change."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from accounts.models import MailAccount
from mailbox import outbox, sync, writeback
from mailbox.models import Folder, Message, OutgoingMessage
from providers import registry
from providers.base import ChangeKind, MessageChange
from tests.fakeprovider.provider import SERVERS, Server
from tests.fixtures.mail import raw_message
from tests.fixtures.ui import provider_on
from tests.test_layering import imported_modules

pytestmark = pytest.mark.django_db

FOLDER = Path(__file__).resolve().parent.parent / "fakeprovider"


@pytest.fixture
def memory_provider(monkeypatch):
    monkeypatch.setitem(
        registry.PROVIDERS, "memory", registry.Entry("Memory Mail", "tests.fakeprovider.provider.MemoryProvider")
    )
    registry.get.cache_clear()
    provider_on("memory")  # as an administrator turns a provider on in Mail settings
    yield
    registry.get.cache_clear()
    SERVERS.clear()


@pytest.fixture
def account(memory_provider, alice):
    account = MailAccount(user=alice, provider="memory", email="carol@memory.test")
    account.full_clean()  # the model's provider choices come from the registry: no migration, no edit
    account.save()
    sync.account_sync_start(account=account, since=None)
    return account


def server_of(account: MailAccount) -> Server:
    return SERVERS.setdefault(account.email, Server())


def stored(account: MailAccount) -> dict[str, tuple[bool, set[str]]]:
    return {
        m.remote_id: (m.is_read, {f.remote_id for f in m.folders.all()})
        for m in Message.objects.filter(account=account).prefetch_related("folders")
    }


def test_the_registry_line_is_all_the_models_and_pages_need(account):
    assert ("memory", "Memory Mail") in registry.choices()
    assert account.provider_name == "Memory Mail"
    with pytest.raises(ValidationError, match="'nonesuch' is not a valid choice"):  # the choices are checked
        MailAccount(user=account.user, provider="nonesuch", email="x@example.org").full_clean()


def test_the_engine_syncs_it_full_then_incremental(account):
    server = server_of(account)
    server.put("m1", raw_message(subject="One", message_id="one@memory.test"))
    server.put("m2", raw_message(subject="Two", message_id="two@memory.test"), read=True)

    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    assert stored(account) == {"m1": (False, {"INBOX"}), "m2": (True, {"INBOX"})}
    assert set(Folder.objects.filter(account=account).values_list("role", flat=True)) == {"inbox", "sent"}

    del server.messages["m1"]
    server.messages["m2"].read = False
    server.put("m3", raw_message(subject="Three", message_id="three@memory.test"))
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    assert stored(account) == {"m2": (False, {"INBOX"}), "m3": (False, {"INBOX"})}
    account.sync_state.refresh_from_db()
    assert account.sync_state.stage == "incremental"


def test_write_back_and_the_outbox_reach_it(account, eager_celery, django_capture_on_commit_callbacks):
    server = server_of(account)
    server.put("m1", raw_message(subject="One", message_id="one@memory.test"))
    sync.account_sync(account_id=account.pk)

    with django_capture_on_commit_callbacks(execute=True):
        writeback.messages_change(
            user=account.user,
            message_ids=[Message.objects.get(account=account).pk],
            change=MessageChange(ChangeKind.READ),
        )
    assert server.messages["m1"].read is True

    outgoing = OutgoingMessage.objects.create(
        account=account, to=[{"name": "Bob", "email": "bob@example.org"}], subject="Hi", body_text="Hello\n"
    )
    with django_capture_on_commit_callbacks(execute=True):
        outbox.outgoing_queue(outgoing=outgoing)
    outgoing.refresh_from_db()
    assert outgoing.status == "sent"
    assert server.messages[outgoing.remote_id].raw == bytes(outgoing.raw)


def test_its_folder_imports_only_the_provider_boundary():
    modules = {m for path in FOLDER.glob("*.py") for m in imported_modules(path)}
    assert not {m for m in modules if m.split(".")[0] in ("mailbox", "accounts")}
    assert {m for m in modules if m.startswith("providers.")} <= {
        "providers.base",
        "providers.errors",
        *(f"providers.base.{name}" for name in dir(__import__("providers.base").base)),
        *(f"providers.errors.{name}" for name in dir(__import__("providers.errors").errors)),
    }
