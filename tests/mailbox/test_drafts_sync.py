"""Drafts at the provider, both ways, on both engines over real sockets: the sandbox Gmail API (drafts.*) and
Dovecot (APPEND \\Draft to Drafts). Each test acts as the user would in Mailhub and, at the provider, as the user
would in Gmail or Outlook, then syncs."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from django.urls import reverse
from django.utils import timezone

from mailbox import compose, drafts, outbox, sync
from mailbox.local import account_client
from mailbox.models import Folder, OutgoingMessage, RemoteDraftDeletion, Signature, SyncState

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutgoingMessage.Status


def _draft_raw(*, sender: str, to: str, subject: str, body: str, when=None, message_id: str | None = None) -> bytes:
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {format_datetime(when or timezone.now())}",
        f"Message-ID: {message_id or make_msgid(domain='example.org')}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


def _parsed(raw: bytes):
    return message_from_bytes(raw, policy=policy.default)


def _edit_at_provider(account, side, *, subject: str, body: str, to: str = "bob@example.org", when=None,
                      dated: bool = True) -> None:  # fmt: skip
    """The user changes the one draft at the provider (in Gmail, or another IMAP client): same Message-ID."""
    draft_id, raw = _only(side)
    edited = _draft_raw(sender=account.email, to=to, subject=subject, body=body, when=when,
                        message_id=_parsed(raw)["Message-ID"])  # fmt: skip
    side.edit(draft_id, edited if dated else edited.replace(b"Date: ", b"X-Old-Date: "))


class GmailSide:
    """The user's Drafts as Gmail has them, and what the user does in Gmail."""

    def __init__(self, store, email: str) -> None:
        self.store, self.email = store, email

    def drafts(self) -> dict[str, bytes]:
        return {draft_id: view.raw for draft_id, view in self.store.drafts(self.email).items()}

    def write(self, raw: bytes) -> str:
        return self.store.draft_create(self.email, raw)[0]

    def edit(self, draft_id: str, raw: bytes) -> None:
        self.store.draft_update(self.email, draft_id, raw)

    def delete(self, draft_id: str) -> None:
        self.store.draft_delete(self.email, draft_id)


class ImapSide:
    """The Drafts folder on the IMAP server, and what another mail client does there."""

    def __init__(self, dovecot, email: str) -> None:
        self.dovecot, self.email = dovecot, email

    def drafts(self) -> dict[str, bytes]:
        with self.dovecot.client(self.email) as imap:
            imap.select_folder("Drafts", readonly=True)
            uids = imap.search(["NOT", "DELETED"])
            fetched = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        found = {}
        for _uid, data in sorted(fetched.items()):
            raw = bytes(data[b"BODY[]"])
            found[_parsed(raw)["Message-ID"].strip("<>")] = raw
        assert len(found) == len(fetched), "two versions of one draft are left in Drafts"
        return found

    def write(self, raw: bytes) -> str:
        self.dovecot.append(self.email, raw, folder="Drafts", flags=[b"\\Draft", b"\\Seen"])
        return _parsed(raw)["Message-ID"].strip("<>")

    def edit(self, draft_id: str, raw: bytes) -> None:
        old = self._uids(draft_id)
        self.dovecot.append(self.email, raw, folder="Drafts", flags=[b"\\Draft", b"\\Seen"])
        self.dovecot.expunge(self.email, "Drafts", old)

    def delete(self, draft_id: str) -> None:
        self.dovecot.expunge(self.email, "Drafts", self._uids(draft_id))

    def _uids(self, draft_id: str) -> list[int]:
        with self.dovecot.client(self.email, folder="Drafts") as imap:
            return imap.search(["HEADER", "Message-ID", f"<{draft_id}>"])


@pytest.fixture
def mailbox_at(request, synced_mailbox):
    """(account, provider side) for a Gmail account and for an Outlook account on Dovecot, each synced once."""
    if synced_mailbox.provider == "google":
        return synced_mailbox, GmailSide(request.getfixturevalue("sandbox_settings").gmail, synced_mailbox.email)
    return synced_mailbox, ImapSide(request.getfixturevalue("dovecot"), synced_mailbox.email)


def _sync(account) -> None:
    assert sync.account_sync(account_id=account.pk).outcome == "ok"


def _save(account, draft=None, *, subject: str, body: str, to: str = "bob@example.org") -> OutgoingMessage:
    data = {"to": [{"name": "", "email": to}], "cc": [], "bcc": [], "subject": subject, "body_text": body}
    return compose.draft_save(draft=draft, account=account, data=data, files=[], remove_ids=[])


def _only(side) -> tuple[str, bytes]:
    (item,) = side.drafts().items()
    return item


def _local_drafts(account) -> list[OutgoingMessage]:
    return list(OutgoingMessage.objects.filter(account=account, status=Status.DRAFT).order_by("id"))


def test_a_draft_saved_in_mailhub_is_in_the_providers_drafts_and_saving_again_replaces_it(mailbox_at):
    account, side = mailbox_at
    signature = Signature.objects.create(user=account.user, name="Work", text="-- \nAlice, Sales")
    draft = _save(account, subject="Quarterly numbers", body="First words")
    OutgoingMessage.objects.filter(pk=draft.pk).update(signature=signature)
    _sync(account)
    draft_id, raw = _only(side)
    assert _parsed(raw)["Subject"] == "Quarterly numbers"
    assert _parsed(raw)["To"] == "bob@example.org"
    assert "First words" in _parsed(raw).get_body().get_content()
    assert "Alice, Sales" in _parsed(raw).get_body().get_content()  # the provider shows what will be sent

    _save(account, OutgoingMessage.objects.get(pk=draft.pk), subject="Quarterly numbers", body="Second words")
    _sync(account)
    again_id, raw = _only(side)  # one draft, its new version
    assert again_id == draft_id
    assert "Second words" in _parsed(raw).get_body().get_content()
    assert len(_local_drafts(account)) == 1  # our own copy is not imported back as a second draft

    _sync(account)
    assert _only(side)[0] == draft_id  # nothing changed: nothing saved again


def test_a_copy_at_the_provider_never_carries_the_message_id_the_mail_is_sent_with(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="Hello", body="Text")
    _sync(account)
    _draft_id, raw = _only(side)
    draft.refresh_from_db()
    assert draft.message_id and draft.draft_key
    assert _parsed(raw)["Message-ID"].strip("<>") == draft.draft_key != draft.message_id


def test_a_draft_written_at_the_provider_is_finished_and_sent_from_mailhub(mailbox_at):
    account, side = mailbox_at
    draft_id = side.write(_draft_raw(sender=account.email, to="carol@example.org", subject="Offer", body="Dear Carol"))
    _sync(account)
    (row,) = _local_drafts(account)
    assert (row.subject, row.to[0]["email"], row.body_text.strip()) == ("Offer", "carol@example.org", "Dear Carol")
    assert row.remote_draft_id == draft_id
    assert SyncState.objects.get(account=account).drafts_checked_at is not None  # read only: nothing to look at again

    _save(account, row, subject="Offer", body="Dear Carol, here it is", to="carol@example.org")
    _sync(account)
    (same_id, raw) = _only(side)
    assert "here it is" in _parsed(raw).get_body().get_content()

    row = OutgoingMessage.objects.get(pk=row.pk)
    outbox.outgoing_queue(outgoing=row)
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "sent"
    _sync(account)
    assert side.drafts() == {}  # sent: no longer a draft anywhere
    assert _local_drafts(account) == []
    assert OutgoingMessage.objects.get(pk=row.pk).status == Status.SENT


def test_a_draft_discarded_in_mailhub_is_deleted_at_the_provider(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="Never mind", body="...")
    _sync(account)
    assert len(side.drafts()) == 1
    drafts.draft_discard(draft=OutgoingMessage.objects.get(pk=draft.pk))
    assert RemoteDraftDeletion.objects.filter(account=account).count() == 1
    _sync(account)
    assert side.drafts() == {}
    assert not RemoteDraftDeletion.objects.exists()


def test_a_draft_deleted_or_sent_at_the_provider_leaves_mailhubs_drafts(mailbox_at, caplog):
    account, side = mailbox_at
    _save(account, subject="Kept?", body="...")
    _sync(account)
    draft_id, _raw = _only(side)
    side.delete(draft_id)
    with caplog.at_level("INFO", logger="mailbox.drafts"):
        _sync(account)
    assert _local_drafts(account) == []
    assert SyncState.objects.get(account=account).drafts_checked_at is not None
    assert "was sent or deleted at the provider" in caplog.text  # said in the worker's log


def test_a_draft_deleted_at_the_provider_but_written_on_here_is_saved_again(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="Still writing", body="one")
    _sync(account)
    side.delete(_only(side)[0])
    _save(account, OutgoingMessage.objects.get(pk=draft.pk), subject="Still writing", body="one two")
    updates = side.store.stats(account.email).get("drafts.update", 0) if isinstance(side, GmailSide) else 0
    _sync(account)
    if isinstance(side, GmailSide):  # saved as a new draft, without first trying to update the gone one
        assert side.store.stats(account.email).get("drafts.update", 0) == updates
    _draft_id, raw = _only(side)
    assert "one two" in _parsed(raw).get_body().get_content()
    assert [d.pk for d in _local_drafts(account)] == [draft.pk]


def test_an_edit_at_the_provider_reaches_mailhub(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="Plan", body="v1")
    _sync(account)
    _edit_at_provider(account, side, to="dan@example.org", subject="Plan B", body="v2 from my phone")
    _sync(account)
    row = OutgoingMessage.objects.get(pk=draft.pk)
    assert (row.subject, row.body_text.strip(), row.to[0]["email"]) == ("Plan B", "v2 from my phone", "dan@example.org")
    assert SyncState.objects.get(account=account).drafts_checked_at is not None
    assert not row.kept_from_conflict and len(_local_drafts(account)) == 1


@pytest.mark.parametrize("saved_last", ["mailhub", "provider", "same second"])
def test_a_draft_written_in_both_places_between_syncs_keeps_both_versions(mailbox_at, saved_last):
    account, side = mailbox_at
    draft = _save(account, subject="Contract", body="original")
    _sync(account)
    now = timezone.now()
    there_at = {"provider": now + timedelta(minutes=1), "mailhub": now - timedelta(minutes=1)}.get(
        saved_last, now.replace(microsecond=0)
    )
    _edit_at_provider(account, side, subject="Contract", body="written at the provider", when=there_at)
    _save(account, OutgoingMessage.objects.get(pk=draft.pk), subject="Contract", body="written in Mailhub")
    if saved_last == "same second":  # a tie goes to Mailhub's version (the one being written now)
        OutgoingMessage.objects.filter(pk=draft.pk).update(updated_at=there_at)
    _sync(account)

    rows = _local_drafts(account)
    assert sorted(r.body_text.strip() for r in rows) == ["written at the provider", "written in Mailhub"]
    winner = OutgoingMessage.objects.get(pk=draft.pk)
    (kept,) = [r for r in rows if r.pk != draft.pk]
    assert kept.kept_from_conflict and not winner.kept_from_conflict
    expected = "written at the provider" if saved_last == "provider" else "written in Mailhub"  # (and a tie)
    assert winner.body_text.strip() == expected
    # Mailhub's version was saved over the provider's (look again), or nothing was written there (yet).
    assert (SyncState.objects.get(account=account).drafts_checked_at is None) == (saved_last != "provider")
    _sync(account)  # the kept version becomes a draft of its own at the provider too
    bodies = sorted(_parsed(raw).get_body().get_content().strip() for raw in side.drafts().values())
    assert bodies == ["written at the provider", "written in Mailhub"]


def test_a_copy_whose_save_answer_was_lost_is_recognised_not_imported(mailbox_at):
    """A save that reached the provider but whose answer never came back: the next sync finds the copy by its
    Message-ID and links it, instead of showing the draft twice."""
    account, side = mailbox_at
    draft = _save(account, subject="Lost answer", body="once")
    client = account_client(account)
    lost = client.draft_save(raw=outbox.draft_build_raw(outgoing=draft), draft_id=None)
    OutgoingMessage.objects.filter(pk=draft.pk).update(draft_key=draft.draft_key)  # chosen before the call went out
    _sync(account)
    assert [d.pk for d in _local_drafts(account)] == [draft.pk]
    assert list(side.drafts()) == [lost.draft_id]
    assert OutgoingMessage.objects.get(pk=draft.pk).remote_draft_id == lost.draft_id


def test_a_draft_saved_twice_at_the_provider_keeps_one_copy(mailbox_at):
    """A repeated create (httplib2 re-sends a POST whose connection dropped) leaves two copies: one is deleted."""
    account, side = mailbox_at
    draft = _save(account, subject="Twice", body="x")
    _sync(account)
    client = account_client(account)
    row = OutgoingMessage.objects.get(pk=draft.pk)
    client.draft_save(raw=outbox.draft_build_raw(outgoing=row), draft_id=None)
    _sync(account)
    assert len(side.drafts()) == 1
    if isinstance(side, GmailSide):  # (an IMAP save replaces every copy with its Message-ID itself)
        assert SyncState.objects.get(account=account).drafts_checked_at is None  # it deleted one: look again
    assert len(_local_drafts(account)) == 1


def test_the_sidebar_shows_one_drafts(mailbox_at, client, alice):
    account, _side = mailbox_at
    assert Folder.objects.filter(account=account, role=Folder.Role.DRAFTS).exists()
    client.force_login(alice)
    page = client.get(reverse("mailbox:inbox")).content.decode()
    assert page.count(">Drafts<") + page.count(">Drafts <") == 1


def test_autosave_in_the_composer_reaches_the_providers_drafts(mailbox_at, client, alice, eager_celery):
    account, side = mailbox_at
    client.force_login(alice)
    fields = {"account": account.pk, "to": "erin@example.org", "cc": "", "bcc": "", "subject": "Typed in Mailhub",
              "body_text": "Autosaved words", "body_format": "text", "action": "autosave"}  # fmt: skip
    saved = client.post(reverse("mailbox:compose"), fields).json()
    assert saved["saved"]
    _draft_id, raw = _only(side)  # the save queued a sync, run at once here
    assert _parsed(raw)["Subject"] == "Typed in Mailhub"
    client.post(saved["url"], {**fields, "body_text": "Autosaved words, more"})
    assert "more" in _parsed(_only(side)[1]).get_body().get_content()


def test_a_reply_draft_shows_in_its_conversation_once_as_a_draft(mailbox_at, client, alice):
    account, side = mailbox_at
    from tests.fixtures.ui import raw_text_message

    raw, _mid = raw_text_message(subject="Question", body="Can you?", sender="Fay <fay@example.org>", to=account.email)
    if isinstance(side, GmailSide):
        side.store.insert_message(account.email, raw)
    else:
        side.dovecot.append(account.email, raw)
    _sync(account)
    (source,) = account.messages.filter(subject="Question")
    reply = compose.draft_from_source_create(source=source, kind="reply")
    _save(account, reply, subject=reply.subject, body="Yes I can", to="fay@example.org")
    _sync(account)
    _sync(account)  # the provider's copy is stored like any message
    assert account.messages.filter(is_draft=True, subject="Re: Question").exists()

    client.force_login(alice)
    page = client.get(reverse("mailbox:thread", args=[source.thread_id])).content.decode()
    assert reverse("mailbox:draft", args=[reply.pk]) in page
    assert page.count("Yes I can") == 1  # the link to the draft, not the provider's copy as a message


def test_a_new_drafts_copy_at_the_provider_opens_as_the_draft(mailbox_at, client, alice):
    account, _side = mailbox_at
    draft = _save(account, subject="Fresh idea", body="Thinking aloud")
    _sync(account)
    _sync(account)  # the provider's copy is stored like any message, in a thread of its own
    copy = account.messages.get(is_draft=True, subject="Fresh idea")
    client.force_login(alice)
    page = client.get(reverse("mailbox:thread", args=[copy.thread_id])).content.decode()
    assert reverse("mailbox:draft", args=[draft.pk]) in page and page.count("Thinking aloud") == 1


def _settle(account) -> None:
    """Sync until a sync has nothing left to do with drafts (a save's copy has come back through the mail sync)."""
    _sync(account)
    _sync(account)
    assert SyncState.objects.get(account=account).drafts_checked_at is not None


def _drafts_listed(account, side) -> int:
    return side.store.stats(account.email).get("drafts.list", 0)


def test_a_quiet_sync_does_not_ask_the_provider_for_drafts_but_an_hourly_one_does(mailbox_at):
    account, side = mailbox_at
    if not isinstance(side, GmailSide):
        pytest.skip("counted where the sandbox counts calls per method (Gmail)")
    _save(account, subject="Settled", body="x")
    OutgoingMessage.objects.create(account=account, status=Status.SENT, subject="Long gone")  # no copy to delete
    _settle(account)
    listed = _drafts_listed(account, side)
    _sync(account)
    assert _drafts_listed(account, side) == listed  # nothing changed on either side: not asked
    SyncState.objects.filter(account=account).update(drafts_checked_at=timezone.now() - timedelta(minutes=61))
    _sync(account)
    assert _drafts_listed(account, side) == listed + 1


def test_each_change_here_gets_the_provider_asked_at_the_next_sync(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="One", body="first")
    _settle(account)
    _save(account, OutgoingMessage.objects.get(pk=draft.pk), subject="One", body="second")  # a save
    _sync(account)
    assert "second" in _parsed(_only(side)[1]).get_body().get_content()
    _settle(account)
    drafts.draft_discard(draft=OutgoingMessage.objects.get(pk=draft.pk))  # a discard
    _sync(account)
    assert side.drafts() == {}

    sent = _save(account, subject="Two", body="to send")
    _settle(account)
    row = OutgoingMessage.objects.get(pk=sent.pk)
    outbox.outgoing_queue(outgoing=row)  # a send (its copy must go)
    _sync(account)
    assert side.drafts() == {}
    assert SyncState.objects.get(account=account).drafts_checked_at is None  # it wrote: the next sync looks again
    assert OutgoingMessage.objects.get(pk=sent.pk).remote_draft_id == ""


def test_discarding_a_draft_never_copied_to_the_provider_leaves_nothing_to_delete(mailbox_at):
    account, _side = mailbox_at
    row = OutgoingMessage.objects.create(account=account, subject="Local only")  # as Reply makes one: never saved
    _sync(account)
    assert OutgoingMessage.objects.get(pk=row.pk).remote_draft_id == ""  # not saved by the user: not copied
    drafts.draft_discard(draft=row)
    assert not RemoteDraftDeletion.objects.exists()


def test_a_reply_written_at_the_provider_is_a_reply_here_with_its_attachment(mailbox_at):
    account, side = mailbox_at
    from tests.fixtures.ui import raw_text_message

    raw, _mid = raw_text_message(subject="Invoice", body="Attached?", sender="Gus <gus@example.org>", to=account.email)
    if isinstance(side, GmailSide):
        side.store.insert_message(account.email, raw)
    else:
        side.dovecot.append(account.email, raw)
    _sync(account)
    source = account.messages.get(subject="Invoice")
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = account.email, "gus@example.org", "Re: Invoice"
    reply["Date"], reply["Message-ID"] = format_datetime(timezone.now()), make_msgid(domain="example.org")
    reply["In-Reply-To"] = f"<{source.message_id}>"
    reply.set_content("Here it is.")
    reply.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    side.write(reply.as_bytes())
    _sync(account)
    (row,) = _local_drafts(account)
    assert (row.kind, row.source_id, row.in_reply_to) == ("reply", source.pk, source.message_id)
    assert [(a.filename, a.size) for a in row.attachments.all()] == [("invoice.pdf", 16)]


def test_a_provider_version_without_a_date_loses_to_mailhubs_and_is_kept(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="Undated", body="original")
    _sync(account)
    _edit_at_provider(account, side, subject="Undated", body="from elsewhere", dated=False)
    _save(account, OutgoingMessage.objects.get(pk=draft.pk), subject="Undated", body="mine")
    _sync(account)
    assert OutgoingMessage.objects.get(pk=draft.pk).body_text.strip() == "mine"
    (kept,) = [r for r in _local_drafts(account) if r.pk != draft.pk]
    assert kept.kept_from_conflict and kept.body_text.strip() == "from elsewhere"


def test_a_sync_that_wrote_to_the_provider_lists_its_drafts_again_next_time(mailbox_at):
    """What a sync changes at the provider reaches the store only with the next mail sync, so that sync lists the
    provider's Drafts whatever the store shows: a copy deleted there right after it was saved is still noticed."""
    account, side = mailbox_at
    first = _save(account, subject="First", body="a")
    second = _save(account, subject="Second", body="b")
    _settle(account)
    _save(account, OutgoingMessage.objects.get(pk=first.pk), subject="First", body="a, again")  # saved; second not
    _sync(account)
    assert SyncState.objects.get(account=account).drafts_checked_at is None
    _settle(account)

    drafts.draft_discard(draft=OutgoingMessage.objects.get(pk=second.pk))  # deleted at the provider this sync...
    side.write(_draft_raw(sender=account.email, to="x@example.org", subject="Third", body="c"))  # ...and one read
    _sync(account)
    assert SyncState.objects.get(account=account).drafts_checked_at is None
    assert sorted(d.subject for d in _local_drafts(account)) == ["First", "Third"]


def test_undo_send_puts_the_draft_back_in_the_providers_drafts(mailbox_at):
    account, side = mailbox_at
    draft = _save(account, subject="Second thoughts", body="maybe")
    _settle(account)
    row = OutgoingMessage.objects.get(pk=draft.pk)
    outbox.outgoing_queue(outgoing=row, hold=timedelta(seconds=30))  # sent, with time to undo
    _sync(account)
    assert side.drafts() == {}
    assert outbox.outgoing_unsend(outgoing=row)
    _sync(account)
    (_draft_id, raw) = _only(side)
    assert _parsed(raw)["Subject"] == "Second thoughts"


def test_a_draft_that_could_not_be_read_is_read_at_the_next_sync(mailbox_at):
    account, side = mailbox_at
    if not isinstance(side, GmailSide):
        pytest.skip("the fault is injected in the sandbox Gmail API")
    _settle(account)
    side.write(_draft_raw(sender=account.email, to="x@example.org", subject="Flicker", body="here, then not"))
    side.store.fail_next(status=404, method="drafts.get", email=account.email)  # as if replaced right after listing
    _sync(account)
    assert _local_drafts(account) == []
    assert SyncState.objects.get(account=account).drafts_checked_at is None  # not read: the next sync looks again
    _sync(account)
    assert [d.subject for d in _local_drafts(account)] == ["Flicker"]


def test_a_version_that_could_not_be_read_is_read_at_the_next_sync(mailbox_at):
    account, side = mailbox_at
    if not isinstance(side, GmailSide):
        pytest.skip("the fault is injected in the sandbox Gmail API")
    draft = _save(account, subject="Moving", body="v1")
    _settle(account)
    _edit_at_provider(account, side, subject="Moving", body="v2")
    side.store.fail_next(status=404, method="drafts.get", email=account.email)  # as if changed again meanwhile
    _sync(account)
    assert SyncState.objects.get(account=account).drafts_checked_at is None
    _sync(account)
    assert OutgoingMessage.objects.get(pk=draft.pk).body_text.strip() == "v2"


def test_a_reply_draft_is_saved_in_its_gmail_conversation(mailbox_at):
    account, side = mailbox_at
    if not isinstance(side, GmailSide):
        pytest.skip("IMAP has no thread ids: a reply draft threads by its In-Reply-To and References")
    from tests.fixtures.ui import raw_text_message

    raw, _mid = raw_text_message(subject="Agenda", body="Thoughts?", sender="Hal <hal@example.org>", to=account.email)
    side.store.insert_message(account.email, raw)
    _sync(account)
    source = account.messages.get(subject="Agenda")
    reply = compose.draft_from_source_create(source=source, kind="reply")
    _save(account, reply, subject=reply.subject, body="Agreed", to="hal@example.org")
    new = _save(account, subject="Unrelated", body="A new message")
    _sync(account)
    reply, new = OutgoingMessage.objects.get(pk=reply.pk), OutgoingMessage.objects.get(pk=new.pk)
    assert side.store.draft_thread_asked(account.email, reply.remote_draft_id) == source.thread.remote_id
    assert side.store.draft_thread_asked(account.email, new.remote_draft_id) is None
