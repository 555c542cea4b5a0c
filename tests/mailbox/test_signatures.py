"""Signatures: written once in Preferences, chosen per message, added on sending under the user's text and above
the quoted mail, never twice; each From starts with its own default for new mail and for replies."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from django.urls import reverse

from mailbox import compose, outbox
from mailbox.models import OutgoingMessage, Signature, SignatureDefault
from mailbox.signatures import html_signed, signature_html, text_signed
from tests.fixtures.ui import message_add, raw_text_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def _bodies(row: OutgoingMessage) -> tuple[str, str]:
    mail = message_from_bytes(bytes(row.raw), policy=policy.default)
    html = mail.get_body(("html",))
    return mail.get_body(("plain",)).get_content(), html.get_content() if html else ""


def test_the_signature_goes_under_the_text_and_above_the_quote():
    quote = "On Monday, Carol wrote:\n> Lunch?"
    body = f"Yes, noon.\n\n{quote}"
    assert text_signed(body, "Alice\nSales", quote_marker="On Monday, Carol wrote:") == (
        f"Yes, noon.\n\n-- \nAlice\nSales\n\n{quote}"
    )
    assert text_signed("Hello", "Alice", quote_marker="") == "Hello\n\n-- \nAlice\n"
    # The quote was deleted by the user: the signature goes at the end.
    assert text_signed("Just this", "Alice", quote_marker="On Monday, Carol wrote:") == "Just this\n\n-- \nAlice\n"
    # Nothing typed above the quote yet.
    assert text_signed(quote, "Alice", quote_marker="On Monday, Carol wrote:") == f"\n\n-- \nAlice\n\n{quote}"


def test_a_rich_text_signature_is_escaped_and_placed_before_the_quote_paragraph():
    html = "<p>Yes, noon.</p><p>On Monday, Carol &lt;c@x&gt; wrote:</p><blockquote>Lunch?</blockquote>"
    plain = signature_html(Signature(text="Alice <b>\nSales"))  # written as plain text: its lines, escaped
    signed = html_signed(html, plain, quote_marker="On Monday, Carol <c@x> wrote:")
    assert signed == (
        '<p>Yes, noon.</p><div class="signature">-- <br><p>Alice &lt;b&gt;<br>Sales</p></div>'
        "<p>On Monday, Carol &lt;c@x&gt; wrote:</p><blockquote>Lunch?</blockquote>"
    )
    signed = html_signed("<p>Hi</p>", "<p>A</p>", quote_marker="")
    assert signed.endswith('<div class="signature">-- <br><p>A</p></div>')
    rich = Signature(text="Alice", html='<p><strong>Alice</strong> · <a href="https://example.org">site</a></p>')
    assert signature_html(rich) == rich.html


def test_a_reply_starts_with_the_replies_signature_and_it_is_added_once_on_sending(alice, ui_mail):
    account = ui_mail.alice_gmail
    short = Signature.objects.create(user=alice, name="Short", text="A.")
    full = Signature.objects.create(user=alice, name="Full", text="Alice Martin\nSales")
    SignatureDefault.objects.create(account=account, for_new=full, for_replies=short)
    raw, _ = raw_text_message(subject="Lunch", body="Noon?", sender="Carol <carol@example.org>", to=account.email)
    source = message_add(account, raw, folders=[ui_mail.folders[account.email]["INBOX"]])

    draft = compose.draft_from_source_create(source=source, kind="reply")
    assert draft.signature == short and draft.quote_marker.endswith("wrote:")
    assert "A." not in draft.body_text  # not in the text being written: reopening can never show it twice
    draft.body_text = "Yes, noon.\n" + draft.body_text
    draft.save()
    outbox.outgoing_queue(outgoing=draft)
    text, _html = _bodies(draft)
    assert text.startswith("Yes, noon.\n\n-- \nA.\n\n" + draft.quote_marker)
    assert text.count("-- \n") == 1


def test_the_composer_offers_the_users_signatures_only_and_keeps_the_choice(alice_client, alice, bob, ui_mail):
    account = ui_mail.alice_gmail
    mine = Signature.objects.create(user=alice, name="Mine", text="Alice")
    theirs = Signature.objects.create(user=bob, name="Bob's", text="Bob")
    SignatureDefault.objects.create(account=account, for_new=mine)
    page = alice_client.get(reverse("mailbox:compose")).content.decode()
    assert f'<option value="{mine.pk}" selected>Mine</option>' in page
    assert "Bob&#x27;s" not in page and 'data-signature="' in page

    data = {"account": account.pk, "to": "x@example.org", "subject": "S", "body_text": "Hi", "body_format": "text"}
    alice_client.post(reverse("mailbox:compose"), {**data, "signature": mine.pk, "action": "save"})
    draft = OutgoingMessage.objects.get(subject="S")
    assert draft.signature == mine
    reopened = alice_client.get(reverse("mailbox:draft", args=[draft.pk])).content.decode()
    assert f'<option value="{mine.pk}" selected>' in reopened and reopened.count("Hi</textarea>") == 1

    refused = alice_client.post(reverse("mailbox:draft", args=[draft.pk]), {**data, "signature": theirs.pk})
    assert refused.status_code == 400
    alice_client.post(reverse("mailbox:draft", args=[draft.pk]), {**data, "signature": "", "action": "send"})
    draft.refresh_from_db()
    assert draft.signature is None and "-- " not in _bodies(draft)[0]


def test_signatures_are_written_changed_deleted_and_given_defaults_in_preferences(alice_client, alice, bob, ui_mail):
    rich = '<p><strong>Alice</strong><br>ACME <a href="https://acme.example">acme.example</a></p><script>x()</script>'
    added = alice_client.post(reverse("mailbox:signature_add"), {"new-name": "Work", "new-html": rich})
    assert added.status_code == 302
    work = Signature.objects.get(user=alice)
    assert (work.name, work.text) == ("Work", "Alice\nACME acme.example")  # plain mail gets its text
    assert "<strong>Alice</strong>" in work.html and "script" not in work.html  # rich mail gets it sanitised
    for empty in ("", "<p></p>"):
        refused = alice_client.post(reverse("mailbox:signature_add"), {"new-name": "", "new-html": empty})
        assert refused.status_code == 400 and Signature.objects.count() == 1

    prefix = f"s{work.pk}"
    changed = {f"{prefix}-name": "Work", f"{prefix}-html": "<p>Alice Martin<br>ACME</p>"}
    alice_client.post(reverse("mailbox:signature_save", args=[work.pk]), changed)
    work.refresh_from_db()
    assert work.text == "Alice Martin\nACME"

    gmail = ui_mail.alice_gmail
    page = alice_client.get(reverse("mailbox:preferences")).content.decode()
    assert f'name="new_{gmail.pk}"' in page and f'name="replies_{gmail.pk}"' in page
    alice_client.post(reverse("mailbox:signature_defaults"), {f"new_{gmail.pk}": work.pk})
    default = SignatureDefault.objects.get(account=gmail, from_alias="")
    assert default.for_new == work and default.for_replies is None

    bobs = Signature.objects.create(user=bob, name="Bob", text="Bob")
    assert alice_client.post(reverse("mailbox:signature_delete", args=[bobs.pk])).status_code == 404
    assert alice_client.post(reverse("mailbox:signature_defaults"), {f"new_{gmail.pk}": bobs.pk}).status_code == 400
    alice_client.post(reverse("mailbox:signature_delete", args=[work.pk]))
    assert not Signature.objects.filter(pk=work.pk).exists()
    default.refresh_from_db()
    assert default.for_new is None
