"""Re-encrypt every stored secret with the first key of MAILHUB_ENCRYPTION_KEYS.

Put the new key first, keep the old ones after it, run this, then drop the old keys.
"""

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import models, transaction

from mailhub.fields import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt stored secrets with the first key in MAILHUB_ENCRYPTION_KEYS."

    def handle(self, *args: object, **options: object) -> None:
        total = 0
        for model in apps.get_models():
            names = [f.name for f in model._meta.get_fields() if isinstance(f, EncryptedTextField)]
            if names:
                total += _rotate_model(model, names)
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {total} secret(s)."))


def _rotate_model(model: type[models.Model], names: list[str]) -> int:
    count = 0
    with transaction.atomic():
        # Values are read decrypted (by whichever key matches) and written back encrypted with the first key.
        for row in model._base_manager.select_for_update().values("pk", *names):
            updates = {name: row[name] for name in names if row[name]}
            if updates:
                model._base_manager.filter(pk=row["pk"]).update(**updates)
                count += len(updates)
    return count
