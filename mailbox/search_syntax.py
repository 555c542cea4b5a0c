"""What a search box's text means, the way Gmail reads it: one parser for every database.

- Words must all appear, each as a word prefix (``inv`` finds "invoice"); ``"two words"`` is a phrase.
- ``-word``, ``-"a phrase"`` and ``-from:x`` exclude.
- ``from:`` ``to:`` ``cc:`` ``subject:`` ``filename:`` (part of that field; ``from:"Ann Lee"`` may quote);
  ``has:attachment``; ``is:unread`` ``is:read`` ``is:starred`` ``is:unstarred``; ``in:<folder or role>``
  (``in:anywhere`` means every folder); ``after:``/``before:`` a date (2026-11-27 or 2026/11/27; after
  includes the day, before excludes it); ``newer_than:``/``older_than:`` 3d, 2w, 6m or 1y.
- An unknown ``name:value`` is searched as words. Text with nothing searchable in it (only ``%``, ``_`` or
  other symbols) matches nothing rather than everything.

Nothing here touches the database: :mod:`mailbox.search` turns a :class:`ParsedSearch` into each
backend's query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits: "_" separates words, as in both indexes
# A term: an optional "-", then an optional "name:" and a quoted or bare value.
_TERM = re.compile(r'(?P<neg>-)?(?:(?P<name>[A-Za-z_]+):)?(?:"(?P<quoted>[^"]*)"?|(?P<bare>\S+))')
TEXT_FIELDS = ("from", "to", "cc", "subject", "filename")
STATES = {"unread", "read", "starred", "unstarred"}
_AGE = re.compile(r"^(\d{1,4})([dwmy])$")
_AGE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


@dataclass(frozen=True)
class Words:
    """Free text: every token must appear as a word prefix; a phrase's tokens in this order. ``text`` is the term
    as typed ("carol@example.org"), for an index that keeps such a term whole as well as in words."""

    tokens: tuple[str, ...]
    phrase: bool = False
    negated: bool = False
    text: str = ""


@dataclass(frozen=True)
class FieldMatch:
    """``from:``, ``to:``, ``cc:``, ``subject:`` or ``filename:``: ``value`` is part of that field."""

    name: str
    value: str
    negated: bool = False


@dataclass(frozen=True)
class Condition:
    """``has:attachment``, ``is:<state>`` or ``in:<folder>``."""

    name: str  # "attachment", one of STATES, or "in"
    value: str = ""
    negated: bool = False


@dataclass(frozen=True)
class ParsedSearch:
    words: tuple[Words, ...] = ()
    fields: tuple[FieldMatch, ...] = ()
    conditions: tuple[Condition, ...] = ()
    after: date | None = None  # from this day on
    before: date | None = None  # up to the day before
    unsearchable: bool = False  # the text held something, but nothing to search by: match nothing

    @property
    def is_empty(self) -> bool:
        return not (self.words or self.fields or self.conditions or self.after or self.before or self.unsearchable)


@dataclass
class _Builder:
    today: date
    words: list[Words] = field(default_factory=list)
    fields: list[FieldMatch] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    after: date | None = None
    before: date | None = None

    def add(self, name: str, value: str, *, negated: bool, quoted: bool) -> None:
        name = name.lower()
        if not (name and value and self._operator(name, value, negated=negated)):
            self._words(f"{name}:{value}" if name else value, negated=negated, phrase=quoted)

    def _operator(self, name: str, value: str, *, negated: bool) -> bool:
        lowered = value.lower()
        if name in TEXT_FIELDS:
            self.fields.append(FieldMatch(name, value, negated))
        elif name == "has" and lowered in ("attachment", "attachments"):
            self.conditions.append(Condition("attachment", negated=negated))
        elif name == "is" and lowered in STATES:
            self.conditions.append(Condition(lowered, negated=negated))
        elif name == "in":
            if lowered not in ("anywhere", "all"):
                self.conditions.append(Condition("in", value, negated))
        elif name in ("after", "before", "newer_than", "older_than"):
            return self._date(name, lowered, negated=negated)
        else:
            return False
        return True

    def _date(self, name: str, value: str, *, negated: bool) -> bool:
        day = _day(value, today=self.today) if name in ("after", "before") else _age(value, today=self.today)
        if day is None:
            return False
        # "-after:x" is "before:x"; "older_than:3d" is "before: three days ago".
        if (name in ("after", "newer_than")) != negated:
            self.after = max(self.after, day) if self.after else day
        else:
            self.before = min(self.before, day) if self.before else day
        return True

    def _words(self, text: str, *, negated: bool, phrase: bool) -> None:
        tokens = tuple(token.lower() for token in WORD.findall(text))
        if not tokens:
            return
        # "-foo.bar" excludes the text as a whole, not every message with foo or bar.
        as_phrase = len(tokens) > 1 and (phrase or negated)
        self.words.append(Words(tokens, phrase=as_phrase, negated=negated, text=text.lower()))


def _day(value: str, *, today: date) -> date | None:
    for pattern in ("%Y-%m-%d", "%Y/%m/%d"):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    return None


def _age(value: str, *, today: date) -> date | None:
    match = _AGE.match(value)
    if match is None:
        return None
    return today - timedelta(days=int(match.group(1)) * _AGE_DAYS[match.group(2)])


def search_parse(text: str, *, today: date) -> ParsedSearch:
    """``text`` as typed in the search box; ``today`` anchors ``newer_than:`` and ``older_than:``."""
    builder = _Builder(today=today)
    for match in _TERM.finditer(text):
        quoted = match.group("quoted")
        value = quoted if quoted is not None else match.group("bare") or ""
        builder.add(match.group("name") or "", value, negated=bool(match.group("neg")), quoted=quoted is not None)
    parsed = ParsedSearch(
        words=tuple(builder.words),
        fields=tuple(builder.fields),
        conditions=tuple(builder.conditions),
        after=builder.after,
        before=builder.before,
    )
    if parsed.is_empty and text.strip():
        return ParsedSearch(unsearchable=True)
    return parsed
