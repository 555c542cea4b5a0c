from django.apps import AppConfig


class MailboxConfig(AppConfig):
    name = "mailbox"
    label = "mailbox"
    verbose_name = "Mail store"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from mailbox import folder_counts, search

        post_migrate.connect(search.sqlite_triggers_ensure, sender=self)
        post_migrate.connect(folder_counts.sqlite_triggers_ensure, sender=self)
