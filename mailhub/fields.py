"""Encrypted model fields: secrets are stored as Fernet tokens, keyed from settings.

``MAILHUB_ENCRYPTION_KEYS`` is a list: the first key encrypts, every key decrypts, so a key can
be rotated by putting a new one first and running ``manage.py rotate_encryption_keys``.
"""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("MAILHUB_ENCRYPTION_KEYS is empty")
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.MAILHUB_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        # Never include the ciphertext: the message may reach a log.
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with MAILHUB_ENCRYPTION_KEYS (was a key removed?)"
        ) from exc


class EncryptedTextField(models.TextField):
    """A text field whose value is encrypted in the database and plain in Python.

    The empty string is stored as is, so "no secret yet" needs no key.
    """

    def from_db_value(self, value: str | None, expression: object, connection: object) -> str | None:
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value: object) -> str | None:
        text = super().get_prep_value(value)
        if not text:
            return text
        return encrypt(text)
