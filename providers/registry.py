"""The one list of providers: model choices, display names and the code of each come from here.

A new provider is one sub-package and one line in PROVIDERS (see README, "Adding a provider").
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from providers.base import Provider


class Entry(NamedTuple):
    name: str  # shown to users
    path: str  # the Provider class, imported on first use


PROVIDERS: dict[str, Entry] = {
    "google": Entry("Google", "providers.google.provider.GoogleProvider"),
    "microsoft": Entry("Microsoft", "providers.microsoft.provider.MicrosoftProvider"),
    "imap": Entry("IMAP/SMTP", "providers.imap.provider.ImapProvider"),
}


def choices() -> list[tuple[str, str]]:
    """For the models' ``provider`` fields (a callable, so adding a provider needs no migration)."""
    return [(provider_id, entry.name) for provider_id, entry in PROVIDERS.items()]


def name(provider_id: str) -> str:
    entry = PROVIDERS.get(provider_id)
    return entry.name if entry else provider_id


@cache
def get(provider_id: str) -> Provider:
    try:
        entry = PROVIDERS[provider_id]
    except KeyError:
        raise LookupError(f"Unknown mail provider: {provider_id!r}") from None
    return import_string(entry.path)()
