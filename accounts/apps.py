from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Mail accounts"

    def ready(self) -> None:
        from accounts.services import mailboxes_by_provider
        from providers.services import mailbox_counter_set

        mailbox_counter_set(mailboxes_by_provider)
