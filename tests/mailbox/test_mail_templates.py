"""Message templates: own and shared ones, started from in the composer, with variables filled from the recipient
when sent; a variable that cannot be filled is shown before sending and nothing is queued."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from mailbox import outbox, store
from mailbox.mail_templates import (
    VariableError,
    outgoing_variable_problems,
    template_apply,
    variables_fill,
    variables_in,
)
from mailbox.models import MessageTemplate, OutgoingMessage, TemplateAttachment

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def _raw(row: OutgoingMessage):
    return message_from_bytes(bytes(row.raw), policy=policy.default)


def test_variables_are_found_once_and_filled_escaped_in_rich_text():
    assert variables_in("Hi {{first_name}}", "{{ first_name }} and {{ email }}", "{ {not} }") == ["first_name", "email"]
    values = {"first_name": "Ann <3", "email": "ann@x.org"}
    assert variables_fill("Hi {{ first_name }} ({{email}})", values) == "Hi Ann <3 (ann@x.org)"
    assert variables_fill("<p>{{ first_name }}</p>", values, html=True) == "<p>Ann &lt;3</p>"
    with pytest.raises(VariableError, match="is not a variable Mailhub knows"):
        variables_fill("{{ shoe_size }}", values)
    with pytest.raises(VariableError, match="has no value for ann@x.org"):
        variables_fill("{{ first_name }}", {**values, "first_name": ""})


def test_a_template_fills_from_the_recipient_when_sent(alice_client, alice, ui_mail):
    account = ui_mail.alice_gmail
    account.display_name = "Alice Martin"
    account.save()
    template = MessageTemplate.objects.create(
        owner=alice, name="Welcome", subject="Welcome, {{ first_name }}", body_text="Dear {{ name }},\n-- {{ my_name }}"
    )
    TemplateAttachment.objects.create(
        template=template, blob=store.blob_store(content=b"%PDF-1.4"), filename="guide.pdf", size=8
    )
    data = {
        "account": account.pk,
        "to": "Ann Lee <ann@example.org>",
        "subject": "",
        "body_text": "",
        "body_format": "text",
    }
    alice_client.post(reverse("mailbox:compose"), {**data, "action": "save"})
    draft = OutgoingMessage.objects.get(account=account)
    used = alice_client.post(
        reverse("mailbox:draft", args=[draft.pk]), {**data, "action": "template", "template": template.pk}
    )
    assert used["Location"] == reverse("mailbox:draft", args=[draft.pk])
    draft.refresh_from_db()
    assert draft.fills_variables and draft.subject == "Welcome, {{ first_name }}"
    assert [a.filename for a in draft.attachments.all()] == ["guide.pdf"]
    page = alice_client.get(reverse("mailbox:draft", args=[draft.pk])).content.decode()
    assert "are filled from the first To recipient" in page

    form = {**data, "subject": draft.subject, "body_text": draft.body_text, "action": "send"}
    alice_client.post(reverse("mailbox:draft", args=[draft.pk]), form)
    draft.refresh_from_db()
    mail = _raw(draft)
    assert mail["Subject"] == "Welcome, Ann"
    assert mail.get_body(("plain",)).get_content() == "Dear Ann Lee,\n-- Alice Martin\n"
    assert draft.subject == "Welcome, {{ first_name }}"  # the draft keeps the template: Undo brings it back as written
    assert outbox.outgoing_unsend(outgoing=draft) and OutgoingMessage.objects.get(pk=draft.pk).fills_variables


def test_a_template_goes_above_a_rich_text_draft_without_losing_its_formatting(alice, ui_mail):
    template = MessageTemplate.objects.create(owner=alice, name="T", subject="S", body_text="Hi {{ first_name }} <3")
    draft = OutgoingMessage.objects.create(
        account=ui_mail.alice_gmail, body_html="<p><b>Mine</b></p>", body_text="Mine"
    )
    template_apply(draft=draft, template=template)
    assert draft.body_html == "<p>Hi {{ first_name }} &lt;3</p><p><b>Mine</b></p>"
    assert draft.body_text == "Hi {{ first_name }} <3\nMine" and draft.fills_variables


def test_a_variable_that_cannot_be_filled_stops_the_send_with_the_reason(alice_client, alice, ui_mail):
    account = ui_mail.alice_gmail
    draft = OutgoingMessage.objects.create(account=account, subject="Hi {{ first_name }}", fills_variables=True)
    data = {"account": account.pk, "subject": draft.subject, "body_text": "x", "body_format": "text", "action": "send"}
    nameless = alice_client.post(reverse("mailbox:draft", args=[draft.pk]), {**data, "to": "ann@example.org"})
    assert nameless.status_code == 400
    assert "{{ first_name }} has no value for ann@example.org." in nameless.content.decode()
    draft.refresh_from_db()
    assert draft.status == OutgoingMessage.Status.DRAFT and draft.raw is None

    unknown = alice_client.post(
        reverse("mailbox:draft", args=[draft.pk]), {**data, "to": "Ann <ann@example.org>", "body_text": "{{ size }}"}
    )
    assert unknown.status_code == 400 and "{{ size }} is not a variable Mailhub knows" in unknown.content.decode()
    draft.refresh_from_db()
    assert outgoing_variable_problems(draft) and draft.status == OutgoingMessage.Status.DRAFT


def test_braces_typed_in_an_ordinary_message_are_sent_as_typed(alice_client, ui_mail):
    data = {"account": ui_mail.alice_gmail.pk, "to": "dev@example.org", "subject": "Jinja", "body_format": "text"}
    alice_client.post(reverse("mailbox:compose"), {**data, "body_text": "Write {{ user.name }}.", "action": "send"})
    row = OutgoingMessage.objects.get(subject="Jinja")
    assert (
        row.status == OutgoingMessage.Status.QUEUED and "Write {{ user.name }}." in _raw(row).get_body().get_content()
    )


def test_shared_templates_are_offered_to_everyone_and_changed_only_with_the_permission(
    alice_client, alice, bob, ui_mail
):
    bob_client = Client()
    form = {"new-name": "Offer", "new-subject": "Offer", "new-body_text": "Hello {{ first_name }}", "new-shared": "on"}
    alice_client.post(reverse("mailbox:templates"), {**form, "new-files": [SimpleUploadedFile("a.txt", b"a")]})
    offer = MessageTemplate.objects.get(name="Offer")
    assert offer.owner == alice and not offer.shared  # Alice may not share: the box is not even offered
    assert [a.filename for a in offer.attachments.all()] == ["a.txt"]
    refused = alice_client.post(reverse("mailbox:templates"), {**form, "new-name": ""})
    assert refused.status_code == 400 and not MessageTemplate.objects.filter(name="").exists()

    bob.user_permissions.add(Permission.objects.get(codename="share_template"))
    bob_client.force_login(bob)
    bob_client.post(reverse("mailbox:templates"), {**form, "new-name": "Team offer"})
    team = MessageTemplate.objects.get(name="Team offer")
    assert team.shared and team.owner == bob

    page = alice_client.get(reverse("mailbox:compose")).content.decode()
    assert "Offer</option>" in page and "Team offer · shared</option>" in page
    listing = alice_client.get(reverse("mailbox:templates")).content.decode()
    assert reverse("mailbox:template_save", args=[team.pk]) not in listing  # shown, not editable by Alice
    assert alice_client.post(reverse("mailbox:template_delete", args=[team.pk])).status_code == 404
    assert alice_client.post(reverse("mailbox:template_delete", args=[offer.pk])).status_code == 302
    assert not MessageTemplate.objects.filter(pk=offer.pk).exists()
    assert "Team offer" in bob_client.get(reverse("mailbox:templates")).content.decode()


def test_mail_admins_may_share_templates(client, alice):
    from django.contrib.auth.models import Group

    from providers.models import MAIL_ADMIN_GROUP

    alice.groups.add(Group.objects.get(name=MAIL_ADMIN_GROUP))
    client.force_login(alice)
    assert 'name="new-shared"' in client.get(reverse("mailbox:templates")).content.decode()
    form = {"new-name": "Team", "new-subject": "Hi", "new-body_text": "x", "new-shared": "on"}
    client.post(reverse("mailbox:templates"), form)
    assert MessageTemplate.objects.get(name="Team").shared


def test_a_rich_template_is_written_in_the_editor_and_sent_as_rich_text(alice_client, alice, ui_mail):
    account = ui_mail.alice_gmail
    body = '<p>Dear <strong>{{ first_name }}</strong>,</p><ul><li>one</li></ul><p onclick="x()">Bye</p>'
    made = alice_client.post(
        reverse("mailbox:templates"), {"new-name": "Rich", "new-subject": "Hi", "new-body_html": body}
    )
    assert made.status_code == 302
    template = MessageTemplate.objects.get(name="Rich")
    assert "<strong>{{ first_name }}</strong>" in template.body_html and "onclick" not in template.body_html
    assert template.body_text.startswith("Dear {{ first_name }},")  # plain-text mail gets the text twin

    data = {"account": account.pk, "to": "Ann Lee <ann@example.org>", "subject": "", "body_text": "Already here",
            "body_format": "text"}  # fmt: skip
    alice_client.post(reverse("mailbox:compose"), {**data, "action": "save"})
    draft = OutgoingMessage.objects.get(account=account)
    alice_client.post(
        reverse("mailbox:draft", args=[draft.pk]), {**data, "action": "template", "template": template.pk}
    )
    draft.refresh_from_db()
    assert draft.body_html.startswith(template.body_html) and "Already here" in draft.body_html
    outbox.outgoing_queue(outgoing=draft)
    html = _raw(draft).get_body(("html",)).get_content()
    assert "Dear <strong>Ann</strong>," in html and "<li>one</li>" in html
    assert "Dear Ann," in _raw(draft).get_body(("plain",)).get_content()


def test_a_template_written_as_plain_text_opens_in_the_editor_as_its_lines(alice_client, alice):
    template = MessageTemplate.objects.create(owner=alice, name="Old", subject="S", body_text="Line one\nLine <two>")
    page = alice_client.get(reverse("mailbox:templates")).content.decode()
    assert "&lt;p&gt;Line one&lt;br&gt;Line &amp;lt;two&amp;gt;&lt;/p&gt;" in page  # escaped inside the textarea
    assert template.body_html == ""
