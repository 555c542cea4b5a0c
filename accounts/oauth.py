"""Pending OAuth authorisations, kept in the user's session.

A ``state`` is random, single-use (popped on the callback), bound to the session, the signed-in
user and the provider, and expires after :data:`STATE_TTL_SECONDS`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

SESSION_KEY = "mailhub_oauth_pending"
STATE_TTL_SECONDS = 600
MAX_PENDING = 5  # a user juggling a few tabs, not an unbounded session


class StateError(Exception):
    """The callback's state is missing, unknown, reused, expired or for someone else (user-safe)."""


@dataclass(frozen=True)
class PendingAuthorization:
    provider: str
    user_id: int
    created_at: float
    redirect_uri: str
    flow: dict[str, Any]
    sync_since: str | None  # ISO date, or None for "everything"

    @property
    def since(self) -> date | None:
        return date.fromisoformat(self.sync_since) if self.sync_since else None


def new_state() -> str:
    return secrets.token_urlsafe(32)


def pending_save(*, session: SessionBase, state: str, pending: PendingAuthorization) -> None:
    entries = {
        key: value
        for key, value in session.get(SESSION_KEY, {}).items()
        if value["created_at"] + STATE_TTL_SECONDS > time.time()
    }
    entries[state] = asdict(pending)
    newest = sorted(entries.items(), key=lambda item: item[1]["created_at"])[-MAX_PENDING:]
    session[SESSION_KEY] = dict(newest)


def pending_pop(*, session: SessionBase, state: str | None, user_id: int) -> PendingAuthorization:
    """Take the pending authorisation for ``state`` out of the session (so it can't be replayed)."""
    entries = dict(session.get(SESSION_KEY, {}))
    raw = entries.pop(state, None) if state else None
    session[SESSION_KEY] = entries
    if raw is None:
        raise StateError("This sign-in response is not one Mailhub is waiting for (it may have been used already).")
    pending = PendingAuthorization(**raw)
    if pending.user_id != user_id:
        raise StateError("This sign-in response belongs to a different Mailhub user.")
    if pending.created_at + STATE_TTL_SECONDS <= time.time():
        raise StateError("The sign-in took too long and expired. Please connect again.")
    return pending
