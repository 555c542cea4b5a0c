"""Who a mailbox sends as: its own address under the user's name and Gmail's "Send mail as" aliases, read from
the sandbox Gmail API over real sockets, offered in the composer and used (or refused) when sending."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import MailAccount
from mailbox import compose, outbox, sync
from mailbox.models import Message, OutgoingMessage, SendAsAlias, SyncState
from providers.errors import ErrorCode

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutgoingMessage.Status
SALES = "sales@example.org"


@pytest.fixture
def with_aliases(gmail_account, gmail_mailbox):
    store, email = gmail_mailbox.store, gmail_mailbox.email
    store.display_name_set(email, "Alice Martin")
    store.send_as_add(email, SALES, display_name="Alice (Sales)", default=True)
    store.send_as_add(email, "pending@example.org", display_name="Not yet", verified=False)
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    gmail_account.refresh_from_db()
    return gmail_account


def _sent_from(gmail_mailbox) -> tuple[str, str]:
    """(name, address) of the From of the one message sent, as Gmail stored it."""
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    stored = gmail_mailbox.store.message(gmail_mailbox.email, sent.id)
    (sender,) = message_from_bytes(stored.raw, policy=policy.default)["From"].addresses
    return sender.display_name, sender.addr_spec


def test_the_first_sync_reads_the_verified_aliases_and_gmails_name(with_aliases, gmail_mailbox):
    aliases = list(SendAsAlias.objects.filter(account=with_aliases).values_list("address", "name", "is_default"))
    assert aliases == [(SALES, "Alice (Sales)", True)]  # the pending one cannot be sent from
    assert with_aliases.display_name == "Alice Martin"


def test_aliases_are_read_again_only_after_a_while_and_follow_gmail(with_aliases, gmail_mailbox):
    store, email = gmail_mailbox.store, gmail_mailbox.email
    listed = store.stats(email).get("settings.sendAs.list", 0)
    store.send_as_remove(email, SALES)
    store.send_as_add(email, "support@example.org", display_name="Support")
    assert sync.account_sync(account_id=with_aliases.pk).outcome == "ok"
    assert store.stats(email).get("settings.sendAs.list", 0) == listed  # not on every sync
    assert SendAsAlias.objects.filter(account=with_aliases).count() == 1

    SyncState.objects.filter(account=with_aliases).update(identities_checked_at=timezone.now() - timedelta(hours=7))
    assert sync.account_sync(account_id=with_aliases.pk).outcome == "ok"
    assert store.stats(email)["settings.sendAs.list"] == listed + 1
    assert list(SendAsAlias.objects.filter(account=with_aliases).values_list("address", flat=True)) == [
        "support@example.org"
    ]


def test_a_name_the_user_chose_is_kept_over_gmails(gmail_account, gmail_mailbox):
    MailAccount.objects.filter(pk=gmail_account.pk).update(display_name="Ali M.")
    gmail_mailbox.store.display_name_set(gmail_mailbox.email, "Alice Martin")
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    gmail_account.refresh_from_db()
    assert gmail_account.display_name == "Ali M."


def test_mail_goes_out_under_the_users_name_or_from_the_chosen_alias(with_aliases, gmail_mailbox):
    own = OutgoingMessage.objects.create(account=with_aliases, to=[{"name": "", "email": "bob@example.org"}])
    outbox.outgoing_queue(outgoing=own)
    assert outbox.outgoing_send(outgoing_id=own.pk).outcome == "sent"
    assert _sent_from(gmail_mailbox) == ("Alice Martin", with_aliases.email)

    gmail_mailbox.store._mailboxes[gmail_mailbox.email.lower()].sent.clear()
    alias = OutgoingMessage.objects.create(
        account=with_aliases,
        to=[{"name": "", "email": "bob@example.org"}],
        from_alias=SALES,
        from_name="Alice (Sales)",
    )
    outbox.outgoing_queue(outgoing=alias)
    assert outbox.outgoing_send(outgoing_id=alias.pk).outcome == "sent"
    assert _sent_from(gmail_mailbox) == ("Alice (Sales)", SALES)


def test_an_alias_gmail_no_longer_accepts_fails_the_message_instead_of_sending_it_from_elsewhere(
    with_aliases, gmail_mailbox
):
    gmail_mailbox.store.send_as_remove(gmail_mailbox.email, SALES)  # removed at Gmail after the draft was written
    row = OutgoingMessage.objects.create(
        account=with_aliases, to=[{"name": "", "email": "bob@example.org"}], from_alias=SALES, from_name="Sales"
    )
    outbox.outgoing_queue(outgoing=row)
    assert outbox.outgoing_send(outgoing_id=row.pk).outcome == "failed"
    row.refresh_from_db()
    assert row.status == Status.FAILED and row.last_error_code == ErrorCode.ALIAS_REFUSED
    assert 'verified "Send mail as" addresses. Nothing was sent.' in row.error_message
    assert row.handed_off_at is None and gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []
    with_aliases.refresh_from_db()
    assert not with_aliases.needs_reconnect  # the mailbox itself is fine


def test_a_reply_goes_out_from_the_alias_the_mail_was_sent_to_and_reply_all_leaves_it_out(with_aliases, gmail_mailbox):
    gmail_mailbox.deliver(
        subject="Order 42", sender="Carol <carol@example.org>", to=f"{SALES}, dan@example.org", message_id="o42@x"
    )
    assert sync.account_sync(account_id=with_aliases.pk).outcome == "ok"
    source = Message.objects.get(account=with_aliases, message_id="o42@x")
    draft = compose.draft_from_source_create(source=source, kind="reply_all")
    assert (draft.from_alias, draft.from_name) == (SALES, "Alice (Sales)")
    assert [p["email"] for p in draft.to] == ["carol@example.org"]
    assert [p["email"] for p in draft.cc] == ["dan@example.org"]  # not the alias: that is the user


def test_the_composer_offers_every_identity_by_name_and_starts_from_gmails_default(with_aliases, client, alice, bob):
    client.force_login(alice)
    page = client.get(reverse("mailbox:compose")).content.decode()
    assert f'<option value="{with_aliases.pk}">Alice Martin &lt;{with_aliases.email}&gt;</option>' in page
    assert f'<option value="{with_aliases.pk}/{SALES}" selected>Alice (Sales) &lt;{SALES}&gt;</option>' in page
    assert "pending@example.org" not in page and "google" not in page.split('name="account"')[1].split("</select>")[0]

    data = {"to": "bob@example.org", "subject": "Hi", "body_text": "x", "body_format": "text", "action": "save"}
    client.post(reverse("mailbox:compose"), {**data, "account": f"{with_aliases.pk}/{SALES}"})
    draft = OutgoingMessage.objects.get(subject="Hi")
    assert (draft.from_alias, draft.from_name) == (SALES, "Alice (Sales)")
    reopened = client.get(reverse("mailbox:draft", args=[draft.pk])).content.decode()
    assert f'value="{with_aliases.pk}/{SALES}" selected' in reopened

    refused = client.post(reverse("mailbox:compose"), {**data, "account": f"{with_aliases.pk}/someone@else.org"})
    assert refused.status_code == 400
    client.force_login(bob)
    stolen = client.post(reverse("mailbox:compose"), {**data, "subject": "Bob's", "account": f"{with_aliases.pk}"})
    assert stolen.status_code == 400 and not OutgoingMessage.objects.filter(subject="Bob's").exists()


def test_when_gmail_cannot_list_the_aliases_the_mail_still_syncs_and_they_are_read_next_time(
    gmail_account, gmail_mailbox
):
    store, email = gmail_mailbox.store, gmail_mailbox.email
    store.send_as_add(email, SALES, display_name="Sales")
    # Gmail says to come back in ten minutes: longer than a sync waits inline, so the request fails at once.
    store.fail_next(1, status=503, retry_after=600, method="settings.sendAs.list", email=email)
    gmail_mailbox.deliver(subject="Still here")
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    assert Message.objects.filter(account=gmail_account, subject="Still here").exists()
    assert not SendAsAlias.objects.filter(account=gmail_account).exists()
    assert SyncState.objects.get(account=gmail_account).identities_checked_at is None

    store.clear_failures()
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    assert list(SendAsAlias.objects.filter(account=gmail_account).values_list("address", flat=True)) == [SALES]
