"""Full-text search over the user's mail, with filters.

PostgreSQL: a stored ``search_tsv`` column (generated from subject, participants and body, migration
0002 onward) under a GIN index. SQLite: an FTS5 table kept by triggers; where FTS5 is missing, a
LIKE scan. The model does not declare these: they are maintained by the database itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache

from django.db import connection, connections
from django.db.models import BooleanField, Exists, F, Func, OuterRef, Q, QuerySet
from django.utils import timezone

from mailbox.models import Message, MessageFolder, Thread

FTS_TABLE = "mailbox_message_fts"

PG_FORWARD = [
    """
    ALTER TABLE mailbox_message ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' '
            || replace(coalesce(from_address, ''), '@', ' ') || ' '
            || coalesce("to"::text, '') || ' ' || coalesce(cc::text, '') || ' '
            || replace(coalesce("to"::text, '') || ' ' || coalesce(cc::text, ''), '@', ' ') || ' '
            || left(coalesce(body_text, ''), 200000))
    ) STORED
    """,
    "CREATE INDEX mailbox_message_search ON mailbox_message USING gin (search_tsv)",
]
PG_BACKWARD = ["DROP INDEX IF EXISTS mailbox_message_search", "ALTER TABLE mailbox_message DROP COLUMN search_tsv"]

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE mailbox_message_fts USING fts5("
    "subject, participants, body, tokenize = 'unicode61 remove_diacritics 2')",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_ai AFTER INSERT ON mailbox_message BEGIN
        INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        VALUES (new.id, new.subject, coalesce(new.from_name, '') || ' ' || coalesce(new.from_address, '') || ' '
            || coalesce(new."to", '') || ' ' || coalesce(new.cc, ''), new.body_text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_au AFTER UPDATE
        OF subject, from_name, from_address, "to", cc, body_text ON mailbox_message BEGIN
        DELETE FROM mailbox_message_fts WHERE rowid = old.id;
        INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        VALUES (new.id, new.subject, coalesce(new.from_name, '') || ' ' || coalesce(new.from_address, '') || ' '
            || coalesce(new."to", '') || ' ' || coalesce(new.cc, ''), new.body_text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_ad AFTER DELETE ON mailbox_message BEGIN
        DELETE FROM mailbox_message_fts WHERE rowid = old.id;
    END""",
    """INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        SELECT id, subject, coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' '
            || coalesce("to", '') || ' ' || coalesce(cc, ''), body_text FROM mailbox_message""",
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
        for sql in SQLITE_FORWARD[1:4]:
            cursor.execute(sql)


_TOKEN = re.compile(r"\w+", re.UNICODE)


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


class _PgMatch(_IdMatch):
    def as_sql(self, compiler, connection, **extra):
        # Compile the id column to learn the table's alias in this query (it may be a subquery's U0).
        id_sql, id_params = compiler.compile(self.source_expressions[0])
        column = id_sql.rsplit(".", 1)[0] + '."search_tsv"'
        return f"{column} @@ websearch_to_tsquery('simple', %s)", [*id_params, self.query]


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
    return " AND ".join(f'"{token}"*' for token in _TOKEN.findall(text))


def _text_filter(text: str) -> Q | Func | None:
    tokens = _TOKEN.findall(text)
    if not tokens:
        return None
    if connection.vendor == "postgresql":
        return _PgMatch(text)
    if connection.vendor == "sqlite" and _sqlite_has_fts():
        return _FtsMatch(fts5_query(text))
    condition = Q()
    for token in tokens:
        condition &= (
            Q(subject__icontains=token)
            | Q(from_name__icontains=token)
            | Q(from_address__icontains=token)
            | Q(body_text__icontains=token)
        )
    return condition


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def messages_search(*, user, query: SearchQuery) -> QuerySet[Message]:
    messages = Message.objects.filter(account__user=user)
    text_filter = _text_filter(query.text)
    if text_filter is not None:
        messages = messages.filter(text_filter)
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


def threads_search(*, user, query: SearchQuery) -> QuerySet[Thread]:
    """Threads with at least one message matching every part of ``query``; page them with selectors.thread_page."""
    matching = messages_search(user=user, query=query).values("thread_id")
    return Thread.objects.filter(account__user=user, id__in=matching)


__all__ = ["SearchQuery", "messages_search", "threads_search", "fts5_query"]
