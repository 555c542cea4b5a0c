"""Full-text search over the user's mail, with filters.

PostgreSQL: a stored ``search_tsv`` column (generated from subject, participants and body, migration
0002 onward) under a GIN index. SQLite: an FTS5 table kept by triggers; where FTS5 is missing, a
LIKE scan. The model does not declare these: they are maintained by the database itself.

What the search box's text means is :mod:`mailbox.search_syntax`'s (one parser); this module turns it into
each backend's conditions, so a query finds the same mail on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache

from django.db import connection, connections
from django.db.models import BooleanField, Exists, F, Func, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from accounts.models import MailAccount
from mailbox.models import Attachment, Message, MessageFolder, Thread
from mailbox.search_syntax import WORD, Condition, FieldMatch, ParsedSearch, Words, search_parse

FTS_TABLE = "mailbox_message_fts"

# What the full-text index holds, as of migration 0013: subject, participants, body and attachment names
# (also split at dots, dashes and underscores, so "budget" finds budget-2026.xlsx on both databases).
PG_FORWARD = [
    """
    ALTER TABLE mailbox_message ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' '
            || replace(coalesce(from_address, ''), '@', ' ') || ' '
            || coalesce("to"::text, '') || ' ' || coalesce(cc::text, '') || ' '
            || replace(coalesce("to"::text, '') || ' ' || coalesce(cc::text, ''), '@', ' ') || ' '
            || attachment_names || ' ' || translate(attachment_names, '._-', '   ') || ' '
            || left(coalesce(body_text, ''), 200000))
    ) STORED
    """,
    "CREATE INDEX mailbox_message_search ON mailbox_message USING gin (search_tsv)",
]
PG_BACKWARD = ["DROP INDEX IF EXISTS mailbox_message_search", "ALTER TABLE mailbox_message DROP COLUMN search_tsv"]

SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_ai AFTER INSERT ON mailbox_message BEGIN
        INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        VALUES (new.id, new.subject, coalesce(new.from_name, '') || ' ' || coalesce(new.from_address, '') || ' '
            || coalesce(new."to", '') || ' ' || coalesce(new.cc, ''),
            coalesce(new.body_text, '') || ' ' || new.attachment_names);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_au AFTER UPDATE
        OF subject, from_name, from_address, "to", cc, body_text, attachment_names ON mailbox_message BEGIN
        DELETE FROM mailbox_message_fts WHERE rowid = old.id;
        INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        VALUES (new.id, new.subject, coalesce(new.from_name, '') || ' ' || coalesce(new.from_address, '') || ' '
            || coalesce(new."to", '') || ' ' || coalesce(new.cc, ''),
            coalesce(new.body_text, '') || ' ' || new.attachment_names);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_ad AFTER DELETE ON mailbox_message BEGIN
        DELETE FROM mailbox_message_fts WHERE rowid = old.id;
    END""",
]
SQLITE_REFILL = [
    "DELETE FROM mailbox_message_fts",
    """INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        SELECT id, subject, coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' '
            || coalesce("to", '') || ' ' || coalesce(cc, ''), coalesce(body_text, '') || ' ' || attachment_names
        FROM mailbox_message""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS mailbox_message_fts_ai",
    "DROP TRIGGER IF EXISTS mailbox_message_fts_au",
    "DROP TRIGGER IF EXISTS mailbox_message_fts_ad",
    "DROP TABLE IF EXISTS mailbox_message_fts",
]


def sqlite_triggers_ensure(*, using: str = "default", **kwargs) -> None:
    """Re-create the FTS5 triggers, which SQLite drops whenever a migration rebuilds mailbox_message."""
    conn = connections[using]
    if conn.vendor != "sqlite":
        return
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [FTS_TABLE])
        if cursor.fetchone() is None:
            return
        for sql in SQLITE_TRIGGERS:
            cursor.execute(sql)


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    account_id: int | None = None
    folder_id: int | None = None
    unread: bool = False
    has_attachment: bool = False
    date_from: date | None = None
    date_to: date | None = None

    @property
    def is_empty(self) -> bool:
        return not (
            self.text.strip()
            or self.account_id
            or self.folder_id
            or self.unread
            or self.has_attachment
            or self.date_from
            or self.date_to
        )


class _IdMatch(Func):
    """A full-text condition on a message's id column; subclasses write the backend's SQL."""

    output_field = BooleanField()

    def __init__(self, query: str) -> None:
        super().__init__(F("id"))
        self.query = query


class _FtsMatch(_IdMatch):
    def as_sql(self, compiler, connection, **extra):
        id_sql, id_params = compiler.compile(self.source_expressions[0])
        sql = f"{id_sql} IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s)"  # noqa: S608 - constants
        return sql, [*id_params, self.query]


@cache
def _sqlite_has_fts(alias: str = "default") -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [FTS_TABLE])
        return cursor.fetchone() is not None


def fts5_query(text: str) -> str:
    """User words as an FTS5 expression: every word must match, as a prefix; no FTS syntax gets through."""
    return " AND ".join(f'"{token}"*' for token in WORD.findall(text))


def _fts5_words(words: Words) -> str:
    if words.phrase:  # the tokens in this order, the last one as a prefix
        return '"' + " ".join(words.tokens) + '"*'
    return " AND ".join(f'"{token}"*' for token in words.tokens)


def _pg_words(words: Words) -> str:
    """``to_tsquery`` syntax: tokens are letters and digits only (no quote or operator can get in); each a prefix.

    Outside a phrase each token is written "the word, or a word it starts": the same matches as the prefix alone,
    but PostgreSQL cannot estimate a prefix and then gathers every match of a common word before ordering (0.5 s
    at 100k messages), while the whole word's statistics let it walk the newest threads instead (3 ms).
    """
    if words.phrase:
        return " <-> ".join(f"'{token}':*" for token in words.tokens)
    return " & ".join(f"('{token}' | '{token}':*)" for token in words.tokens)


class _PgTsMatch(_IdMatch):
    """PostgreSQL keeps "carol@example.org" or "report.pdf" as one lexeme besides their words: a term typed with
    such separators also matches as PostgreSQL's parser reads it, so it finds what SQLite's words find."""

    def __init__(self, query: str, *, text: str = "") -> None:
        super().__init__(query)
        self.text = text

    def as_sql(self, compiler, connection, **extra):
        id_sql, id_params = compiler.compile(self.source_expressions[0])
        column = id_sql.rsplit(".", 1)[0] + '."search_tsv"'
        if not self.text:
            return f"{column} @@ to_tsquery('simple', %s)", [*id_params, self.query]
        query = "(to_tsquery('simple', %s) || phraseto_tsquery('simple', %s))"
        return f"{column} @@ {query}", [*id_params, self.query, self.text]


def _words_match(words: Words) -> Q | Func:
    """The messages whose subject, participants or body hold ``words`` (one backend's way, one meaning)."""
    if connection.vendor == "postgresql":
        whole = words.text if words.text and words.text != " ".join(words.tokens) else ""
        return _PgTsMatch(_pg_words(words), text=whole)
    if connection.vendor == "sqlite" and _sqlite_has_fts():
        return _FtsMatch(_fts5_words(words))
    parts = [" ".join(words.tokens)] if words.phrase else list(words.tokens)
    condition = Q()
    for part in parts:
        condition &= (
            Q(subject__icontains=part)
            | Q(from_name__icontains=part)
            | Q(from_address__icontains=part)
            | Q(body_text__icontains=part)
        )
    return condition


def _field_match(match: FieldMatch) -> Q | Exists:
    value = match.value
    if match.name == "from":
        return Q(from_address__icontains=value) | Q(from_name__icontains=value)
    if match.name in ("to", "cc"):
        return Q(**{f"{match.name}_text__icontains": value})
    if match.name == "subject":
        return Q(subject__icontains=value)
    return Exists(Attachment.objects.filter(message=OuterRef("pk"), filename__icontains=value))


def _condition_match(condition: Condition) -> Q | Exists:
    if condition.name == "attachment":
        return Q(has_attachments=True)
    if condition.name == "in":
        folder = Q(folder__name__iexact=condition.value) | Q(folder__role__iexact=condition.value)
        return Exists(MessageFolder.objects.filter(folder, message=OuterRef("pk")))
    return {
        "unread": Q(is_read=False),
        "read": Q(is_read=True),
        "starred": Q(is_starred=True),
        "unstarred": Q(is_starred=False),
    }[condition.name]


def _text_apply(messages: QuerySet[Message], parsed: ParsedSearch) -> QuerySet[Message]:
    if parsed.unsearchable:
        return messages.none()
    if any(f.name in ("to", "cc") for f in parsed.fields):
        messages = messages.alias(to_text=Cast("to", TextField()), cc_text=Cast("cc", TextField()))
    parts: list[tuple[Q | Func | Exists, bool]] = [(_words_match(w), w.negated) for w in parsed.words]
    parts += [(_field_match(f), f.negated) for f in parsed.fields]
    parts += [(_condition_match(c), c.negated) for c in parsed.conditions]
    for condition, negated in parts:
        messages = messages.exclude(condition) if negated else messages.filter(condition)
    if parsed.after:
        messages = messages.filter(date__gte=_day_start(parsed.after))
    if parsed.before:
        messages = messages.filter(date__lt=_day_start(parsed.before))
    return messages


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def messages_search(*, user, query: SearchQuery, account_ids: list[int] | None = None) -> QuerySet[Message]:
    """``account_ids``: mailboxes to search (only the user's among them are): a list of ids lets PostgreSQL run
    the full-text scan once for all of them, where a join to the user's mailboxes ran it once per mailbox."""
    if account_ids is None:
        messages = Message.objects.filter(account__user=user)
    else:
        own = MailAccount.objects.filter(user=user, pk__in=account_ids).values_list("pk", flat=True)
        messages = Message.objects.filter(account_id__in=list(own))
    messages = _text_apply(messages, search_parse(query.text, today=timezone.localdate()))
    if query.account_id:
        messages = messages.filter(account_id=query.account_id)
    if query.folder_id:
        in_folder = MessageFolder.objects.filter(message=OuterRef("pk"), folder_id=query.folder_id)
        messages = messages.filter(Exists(in_folder))
    if query.unread:
        messages = messages.filter(is_read=False)
    if query.has_attachment:
        messages = messages.filter(has_attachments=True)
    if query.date_from:
        messages = messages.filter(date__gte=_day_start(query.date_from))
    if query.date_to:
        messages = messages.filter(date__lt=_day_start(query.date_to + timedelta(days=1)))
    return messages


def highlight_terms(text: str) -> list[str]:
    """The words a search looks for (not those it excludes), for marking them in the results."""
    parsed = search_parse(text, today=timezone.localdate())
    return sorted({token for words in parsed.words if not words.negated for token in words.tokens})


def threads_search(*, user, query: SearchQuery) -> QuerySet[Thread]:
    """Threads with at least one message matching every part of ``query``; page them with selectors.thread_page."""
    matching = messages_search(user=user, query=query).values("thread_id")
    return Thread.objects.filter(account__user=user, id__in=matching)


# A search whose matches are at most this many messages is answered from them, gathered with one full-text scan.
FEW_MATCHES = 1000


def threads_search_by_account(*, user, query: SearchQuery) -> list[QuerySet[Thread]]:
    """:func:`threads_search` for selectors.thread_page: one query over the matches when they are few, else one
    query per mailbox of the user walking its newest threads (index thread_recent), merged there.

    Over all the user's mailboxes no index gives date order, so PostgreSQL gathered and sorted every match of a
    common word, or walked every user's newest threads. Few matches are cheaper gathered once: per mailbox, each
    query repeated the full-text scan (an address's "org" and "example5" prefixes: 40 ms each at 1M messages).
    """
    accounts = MailAccount.objects.filter(user=user).order_by("pk")
    if query.account_id:
        accounts = accounts.filter(pk=query.account_id)
    ids = list(accounts.values_list("pk", flat=True))
    messages = messages_search(user=user, query=query, account_ids=ids)
    few = _few_matches(messages)
    if few is not None:
        return [Thread.objects.filter(account_id__in=ids, id__in=few)]
    return [_threads_walked(account_id=a, messages=messages) for a in ids]


def _threads_walked(*, account_id: int, messages: QuerySet[Message]) -> QuerySet[Thread]:
    """The mailbox's threads with a message in ``messages``, for a search known to match many: each of its newest
    threads is asked for one (a scalar subquery, which PostgreSQL keeps per row), so a page reads about as many
    threads as it shows. As a join, PostgreSQL misjudged how many a common word matches and gathered them all
    (35 ms per mailbox at 100,000 messages, 0.3 s with a second condition on the account)."""
    one = messages.filter(thread_id=OuterRef("pk")).values("pk")[:1]
    return Thread.objects.filter(account_id=account_id).alias(hit=Subquery(one)).filter(hit__isnull=False)


def _few_matches(messages: QuerySet[Message]) -> list[int] | None:
    """The threads of ``messages`` if they are at most FEW_MATCHES, else None: one query that stops there, so a
    common word costs the first FEW_MATCHES matches it meets, not all of them."""
    thread_ids = list(messages.values_list("thread_id", flat=True)[: FEW_MATCHES + 1])
    return None if len(thread_ids) > FEW_MATCHES else sorted(set(thread_ids))


__all__ = [
    "SearchQuery",
    "highlight_terms",
    "messages_search",
    "threads_search",
    "threads_search_by_account",
    "fts5_query",
]
