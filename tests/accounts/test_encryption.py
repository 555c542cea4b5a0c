"""Secrets at rest: no plaintext in the database, keys rotate."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction

from accounts.models import MailAccount
from providers.models import ProviderApp

SECRETS = ["client-secret-PLAIN", "access-token-PLAIN", "refresh-token-PLAIN"]


def _dump() -> str:
    """Every text value of every table, as a database dump would contain it."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from introspection
            chunks.extend(str(value) for row in cursor.fetchall() for value in row)
    return "\n".join(chunks)


@pytest.fixture
def stored_secrets(alice):
    ProviderApp.objects.create(provider="google", client_id="id", client_secret=SECRETS[0], enabled=True)
    return MailAccount.objects.create(
        user=alice, provider="google", email="alice@gmail.test", access_token=SECRETS[1], refresh_token=SECRETS[2]
    )


def test_database_holds_no_plaintext_secret(stored_secrets):
    dump = _dump()
    assert "alice@gmail.test" in dump  # the dump is real
    for secret in SECRETS:
        assert secret not in dump
    account = MailAccount.objects.get(pk=stored_secrets.pk)
    assert (account.access_token, account.refresh_token) == (SECRETS[1], SECRETS[2])


def test_rotation_re_encrypts_with_the_new_key_and_old_key_can_go(stored_secrets, settings):
    old_key = settings.MAILHUB_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.MAILHUB_ENCRYPTION_KEYS = [new_key, old_key]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 3 secret(s)" in out.getvalue()
    settings.MAILHUB_ENCRYPTION_KEYS = [new_key]
    account = MailAccount.objects.get(pk=stored_secrets.pk)
    assert account.refresh_token == SECRETS[2]
    assert ProviderApp.objects.get(provider="google").client_secret == SECRETS[0]


def test_a_missing_key_fails_without_revealing_the_ciphertext(stored_secrets, settings):
    settings.MAILHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(Exception) as excinfo:
        MailAccount.objects.get(pk=stored_secrets.pk)
    assert "gAAAA" not in str(excinfo.value)
    assert str(excinfo.value) == (
        "A stored secret cannot be decrypted with MAILHUB_ENCRYPTION_KEYS (was a key removed?)"
    )


def test_no_key_at_all_is_a_configuration_error(alice, settings):
    settings.MAILHUB_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured) as excinfo, transaction.atomic():
        MailAccount.objects.create(user=alice, provider="google", email="a@gmail.test", refresh_token="secret")
    assert str(excinfo.value) == "MAILHUB_ENCRYPTION_KEYS is empty"
    # No secret needs no key: an account without tokens is stored in the clear as empty strings.
    account = MailAccount.objects.create(user=alice, provider="google", email="b@gmail.test")
    assert MailAccount.objects.get(pk=account.pk).refresh_token == ""
