"""A subset of Gmail's search language for messages.list `q`.

Supported: ``after:`` / ``before:`` (epoch seconds, or YYYY/MM/DD at midnight Pacific time, as
Gmail reads dates), ``newer_than:`` / ``older_than:`` (Nd, Nm, Ny), ``in:`` (inbox, sent, trash,
spam, drafts, starred, important, anywhere, or a label), ``label:``, ``is:`` (unread, read,
starred, important), ``from:``, ``to:``, ``subject:``, ``has:attachment``, ``rfc822msgid:``,
free words, quoted phrases, and ``-`` negation. Terms are ANDed; ``OR`` and braces are not.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.gmail.store import StoredMessage

try:
    from zoneinfo import ZoneInfo

    PACIFIC: timezone | ZoneInfo = ZoneInfo("America/Los_Angeles")
except Exception:  # noqa: BLE001 - no tz database: a fixed offset is close enough
    PACIFIC = timezone(timedelta(hours=-8))

Predicate = Callable[["StoredMessage"], bool]

_IN_ALIASES = {
    "inbox": "INBOX",
    "sent": "SENT",
    "trash": "TRASH",
    "spam": "SPAM",
    "drafts": "DRAFT",
    "draft": "DRAFT",
    "starred": "STARRED",
    "important": "IMPORTANT",
    "unread": "UNREAD",
    "chats": "CHAT",
}
_RELATIVE = {"d": 86400, "m": 86400 * 30, "y": 86400 * 365}


class QueryError(ValueError):
    pass


@dataclass
class Query:
    predicates: list[Predicate]
    mentions_spam_trash: bool  # `in:trash`, `in:spam` or `in:anywhere` lift the default exclusion

    def matches(self, message: StoredMessage) -> bool:
        return all(predicate(message) for predicate in self.predicates)


def _epoch_ms(value: str) -> int:
    if value.isdigit():
        return int(value) * 1000
    match = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value)
    if not match:
        raise QueryError(f"Invalid date: {value}")
    year, month, day = (int(group) for group in match.groups())
    return int(datetime(year, month, day, tzinfo=PACIFIC).timestamp() * 1000)


def _relative_ms(value: str) -> int:
    match = re.fullmatch(r"(\d+)([dmy])", value.lower())
    if not match:
        raise QueryError(f"Invalid relative date: {value}")
    return int((time.time() - int(match.group(1)) * _RELATIVE[match.group(2)]) * 1000)


def _label_matcher(value: str, labels: dict[str, str]) -> str | None:
    """Resolve `label:` values by id or by name (Gmail accepts '-' for spaces and slashes)."""
    wanted = value.lower()
    for label_id, name in labels.items():
        lowered = name.lower()
        if wanted in (label_id.lower(), lowered, lowered.replace(" ", "-").replace("/", "-")):
            return label_id
    return None


def _term(key: str, value: str, labels: dict[str, str]) -> tuple[Predicate, bool]:
    key = key.lower()
    if key == "after":
        bound = _epoch_ms(value)
        return (lambda m: m.internal_date >= bound), False
    if key == "before":
        bound = _epoch_ms(value)
        return (lambda m: m.internal_date < bound), False
    if key == "newer_than":
        bound = _relative_ms(value)
        return (lambda m: m.internal_date >= bound), False
    if key == "older_than":
        bound = _relative_ms(value)
        return (lambda m: m.internal_date < bound), False
    if key in ("in", "label", "is"):
        lowered = value.lower()
        if key == "in" and lowered == "anywhere":
            return (lambda m: True), True
        if key == "is" and lowered == "read":
            return (lambda m: "UNREAD" not in m.label_ids), False
        label_id = _IN_ALIASES.get(lowered) or _label_matcher(value, labels)
        if label_id is None:
            # Gmail answers an unknown label with no results rather than an error.
            return (lambda m: False), False
        return (lambda m: label_id in m.label_ids), label_id in ("TRASH", "SPAM")
    if key == "from":
        needle = value.lower()
        return (lambda m: needle in m.facts.sender.lower()), False
    if key == "to":
        needle = value.lower()
        return (lambda m: needle in m.facts.recipients), False
    if key == "subject":
        needle = value.lower()
        return (lambda m: needle in m.facts.subject.lower()), False
    if key == "has":
        if value.lower() == "attachment":
            return (lambda m: m.facts.has_attachment), False
        raise QueryError(f"Unsupported has: {value}")
    if key == "rfc822msgid":
        wanted = value.strip("<>")
        return (lambda m: m.facts.message_id.strip("<>") == wanted), True
    raise QueryError(f"Unsupported operator: {key}")


def _text_contains(needle: str) -> Predicate:
    return lambda m: needle in m.facts.text


def _negated(predicate: Predicate) -> Predicate:
    return lambda m: not predicate(m)


def parse_query(q: str, labels: dict[str, str]) -> Query:
    """Compile ``q`` against the user's labels ({id: name})."""
    try:
        tokens = shlex.split(q)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    predicates: list[Predicate] = []
    lifts = False
    for token in tokens:
        negate = token.startswith("-") and len(token) > 1
        body = token[1:] if negate else token
        key, sep, value = body.partition(":")
        if sep and value and re.fullmatch(r"[a-z_0-9]+", key, re.IGNORECASE):
            predicate, lifted = _term(key, value, labels)
        else:
            predicate, lifted = _text_contains(body.lower()), False
        lifts = lifts or (lifted and not negate)
        predicates.append(_negated(predicate) if negate else predicate)
    return Query(predicates=predicates, mentions_spam_trash=lifts)
