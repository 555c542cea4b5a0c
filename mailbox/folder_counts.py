"""Each folder's count of messages and of unread messages (``Folder.message_count``, ``Folder.unread_count``).

The sidebar shows them on every page and every poll: counted from the memberships they cost time that grew with
the user's mail (the unread ones of 1M messages: 138 ms a poll). The database keeps them instead, with triggers
(migration 0026 onward), so every writer is covered: the store, bulk statements, cascades, the admin. A membership
added or removed moves its folder's counts; a message read or unread moves the unread count of each of its folders.

PostgreSQL: statement-level triggers with transition tables, so a bulk insert of 5,000 memberships updates each
folder row once (a trigger per row would update the same few rows thousands of times in one transaction).
SQLite: row-level triggers, re-created after migrations (SQLite drops them when a migration rebuilds a table).
"""

from __future__ import annotations

from django.db import connections

_PG_DELTA = """
    UPDATE mailbox_folder f SET message_count = f.message_count + d.total, unread_count = f.unread_count + d.unread
    FROM (
        SELECT folder_id, sum(total) AS total, sum(unread) AS unread FROM (
            SELECT r.folder_id, 1 AS total, CASE WHEN m.is_read THEN 0 ELSE 1 END AS unread
            FROM new_rows r JOIN mailbox_message m ON m.id = r.message_id
            UNION ALL
            SELECT r.folder_id, -1, CASE WHEN m.is_read THEN 0 ELSE -1 END
            FROM old_rows r JOIN mailbox_message m ON m.id = r.message_id
        ) AS moves GROUP BY folder_id
    ) AS d
    WHERE f.id = d.folder_id AND (d.total <> 0 OR d.unread <> 0)
"""


def _pg_function(name: str, new_rows: str, old_rows: str) -> str:
    """A trigger function applying _PG_DELTA, with an empty stand-in for the side a trigger has no table for."""
    empty = "(SELECT NULL::bigint AS folder_id, NULL::bigint AS message_id WHERE false)"
    body = _PG_DELTA.replace("new_rows r", f"{new_rows or empty} r").replace("old_rows r", f"{old_rows or empty} r")
    return f"""
    CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {body};
        RETURN NULL;
    END $$
    """


PG_FORWARD = [
    _pg_function("mailbox_folder_counts_insert", "new_rows", ""),
    _pg_function("mailbox_folder_counts_delete", "", "old_rows"),
    # A membership that changes message or folder leaves one and joins the other (a uid change moves nothing).
    _pg_function("mailbox_folder_counts_update", "new_rows", "old_rows"),
    """
    CREATE OR REPLACE FUNCTION mailbox_folder_counts_read() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE mailbox_folder f SET unread_count = f.unread_count + d.delta
        FROM (
            SELECT mf.folder_id, sum(CASE WHEN n.is_read THEN -1 ELSE 1 END) AS delta
            FROM old_rows o JOIN new_rows n ON n.id = o.id JOIN mailbox_messagefolder mf ON mf.message_id = n.id
            WHERE o.is_read <> n.is_read GROUP BY mf.folder_id
        ) AS d
        WHERE f.id = d.folder_id AND d.delta <> 0;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER mailbox_folder_counts_ai AFTER INSERT ON mailbox_messagefolder "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_folder_counts_insert()",
    "CREATE TRIGGER mailbox_folder_counts_ad AFTER DELETE ON mailbox_messagefolder "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_folder_counts_delete()",
    "CREATE TRIGGER mailbox_folder_counts_au AFTER UPDATE ON mailbox_messagefolder "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION mailbox_folder_counts_update()",
    "CREATE TRIGGER mailbox_folder_counts_read AFTER UPDATE ON mailbox_message "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION mailbox_folder_counts_read()",
]
PG_BACKWARD = [
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_ai ON mailbox_messagefolder",
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_ad ON mailbox_messagefolder",
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_au ON mailbox_messagefolder",
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_read ON mailbox_message",
    "DROP FUNCTION IF EXISTS mailbox_folder_counts_insert()",
    "DROP FUNCTION IF EXISTS mailbox_folder_counts_delete()",
    "DROP FUNCTION IF EXISTS mailbox_folder_counts_update()",
    "DROP FUNCTION IF EXISTS mailbox_folder_counts_read()",
]

_SQLITE_UNREAD = "coalesce((SELECT NOT is_read FROM mailbox_message WHERE id = {row}.message_id), 0)"
_SQLITE_JOIN = (
    "UPDATE mailbox_folder SET message_count = message_count + 1, "  # noqa: S608 - constants
    f"unread_count = unread_count + {_SQLITE_UNREAD.format(row='new')} WHERE id = new.folder_id;"
)
_SQLITE_LEAVE = (
    "UPDATE mailbox_folder SET message_count = message_count - 1, "  # noqa: S608 - constants
    f"unread_count = unread_count - {_SQLITE_UNREAD.format(row='old')} WHERE id = old.folder_id;"
)
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS mailbox_folder_counts_ai AFTER INSERT ON mailbox_messagefolder BEGIN
        {_SQLITE_JOIN}
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS mailbox_folder_counts_ad AFTER DELETE ON mailbox_messagefolder BEGIN
        {_SQLITE_LEAVE}
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS mailbox_folder_counts_au AFTER UPDATE OF message_id, folder_id
        ON mailbox_messagefolder BEGIN
        {_SQLITE_LEAVE}
        {_SQLITE_JOIN}
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_folder_counts_read AFTER UPDATE OF is_read ON mailbox_message
        WHEN old.is_read <> new.is_read BEGIN
        UPDATE mailbox_folder SET unread_count = unread_count + (CASE WHEN new.is_read THEN -1 ELSE 1 END)
        WHERE id IN (SELECT folder_id FROM mailbox_messagefolder WHERE message_id = new.id);
    END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_ai",
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_ad",
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_au",
    "DROP TRIGGER IF EXISTS mailbox_folder_counts_read",
]

# Counted from the memberships: fills the columns once (the migration, a bench seed) and checks them (tests).
COUNTS_SQL = """
    SELECT mf.folder_id, count(*), sum(CASE WHEN m.is_read THEN 0 ELSE 1 END)
    FROM mailbox_messagefolder mf JOIN mailbox_message m ON m.id = mf.message_id
    GROUP BY mf.folder_id
"""
_RECOUNT = {
    "postgresql": f"""UPDATE mailbox_folder
        SET message_count = coalesce(c.total, 0), unread_count = coalesce(c.unread, 0)
        FROM mailbox_folder f LEFT JOIN ({COUNTS_SQL}) AS c (folder_id, total, unread) ON c.folder_id = f.id
        WHERE mailbox_folder.id = f.id""",  # noqa: S608 - constants
    "sqlite": """UPDATE mailbox_folder SET
        message_count = (SELECT count(*) FROM mailbox_messagefolder mf WHERE mf.folder_id = mailbox_folder.id),
        unread_count = (SELECT count(*) FROM mailbox_messagefolder mf JOIN mailbox_message m ON m.id = mf.message_id
                        WHERE mf.folder_id = mailbox_folder.id AND NOT m.is_read)""",
}


def folder_counts_counted(*, using: str = "default") -> dict[int, tuple[int, int]]:
    """Every folder's (messages, unread) as counted from the memberships now (folders without any: absent)."""
    with connections[using].cursor() as cursor:
        cursor.execute(COUNTS_SQL)
        return {folder_id: (int(total), int(unread)) for folder_id, total, unread in cursor.fetchall()}


def folder_counts_recount(*, using: str = "default") -> None:
    """Set every folder's counts from its memberships (the triggers keep them from then on)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_RECOUNT[connection.vendor])


def sqlite_triggers_ensure(*, using: str = "default", **kwargs) -> None:
    """Re-create the SQLite triggers, which SQLite drops whenever a migration rebuilds one of their tables.

    Counts cannot drift meanwhile: a rebuild copies the rows as they are, within the migration."""
    conn = connections[using]
    if conn.vendor != "sqlite":
        return
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pragma_table_info('mailbox_folder') WHERE name = 'unread_count'")
        if cursor.fetchone() is None:  # migrated back before the counts
            return
        for sql in SQLITE_TRIGGERS:
            cursor.execute(sql)
