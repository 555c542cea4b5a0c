"""The explicit list of providers. A new provider is one sub-package and one line here."""

from functools import cache

from django.utils.module_loading import import_string

from providers.base import Provider

PROVIDERS: dict[str, str] = {
    "google": "providers.google.provider.GoogleProvider",
    "microsoft": "providers.microsoft.provider.MicrosoftProvider",
    "imap": "providers.imap.provider.ImapProvider",
}


@cache
def get(provider_id: str) -> Provider:
    try:
        path = PROVIDERS[provider_id]
    except KeyError:
        raise LookupError(f"Unknown mail provider: {provider_id!r}") from None
    return import_string(path)()
