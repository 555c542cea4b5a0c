from django.apps import AppConfig


class MailboxConfig(AppConfig):
    name = "mailbox"
    label = "mailbox"
    verbose_name = "Mail store"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from mailbox.search import sqlite_triggers_ensure

        post_migrate.connect(sqlite_triggers_ensure, sender=self)
