"""Inputs that used to raise a server error now get a clear 4xx (run on SQLite and on PostgreSQL)."""

import pytest
from django.urls import reverse

from mailbox.models import OutgoingMessage


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def compose_post(client, url, **fields):
    data = {"to": "", "cc": "", "bcc": "", "subject": "", "body_text": "Hello", "body_format": "text",
            "action": "send", **fields}  # fmt: skip
    return client.post(url, data)


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: everyone@example.net", "Hi\nthere", "Hi\rthere"])
def test_a_line_break_in_the_subject_is_refused_at_the_form(alice_client, ui_mail, subject):
    response = compose_post(alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id,
                            to="carol@example.org", subject=subject)  # fmt: skip
    assert response.status_code == 400
    assert "Line breaks are not allowed here." in response.content.decode()
    assert not OutgoingMessage.objects.exists()


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_a_line_break_in_an_address_field_is_refused(alice_client, ui_mail, field):
    fields = {"to": "carol@example.org", field: "Eve\r\nBcc: x@example.net <eve@example.org>"}
    response = compose_post(alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id, **fields)
    assert response.status_code == 400 and "Line breaks are not allowed here." in response.content.decode()
    assert not OutgoingMessage.objects.exists()


def test_autosave_with_a_line_break_answers_400_json(alice_client, ui_mail):
    response = compose_post(alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id,
                            subject="a\nb", action="autosave")  # fmt: skip
    assert response.status_code == 400 and response.json()["errors"]["subject"][0]["code"] == "line_break"


def test_a_draft_saved_with_a_line_break_can_be_sent_once_reopened(alice_client, ui_mail):
    draft = OutgoingMessage.objects.create(account=ui_mail.alice_gmail, subject="Old\r\ndraft",
                                           to=[{"name": "Carol\nJones", "email": "carol@example.org"}])  # fmt: skip
    url = reverse("mailbox:draft", args=[draft.id])
    form = alice_client.get(url).context["form"]
    assert form.initial["subject"] == "Old draft" and form.initial["to"] == "Carol Jones <carol@example.org>"
    response = compose_post(alice_client, url, account=ui_mail.alice_gmail.id, to=form.initial["to"],
                            subject=form.initial["subject"])  # fmt: skip
    assert response.status_code == 302
    sent = OutgoingMessage.objects.get(pk=draft.pk)
    assert sent.status == OutgoingMessage.Status.QUEUED and b"Subject: Old draft" in bytes(sent.raw)


@pytest.mark.parametrize(
    "url",
    ["/suggest/?q=ab%00c", "/suggest/?q=%00", "/search/?q=in%00voice", "/?cursor=%00", "/folder/1/?cursor=1%00"],
)
def test_a_nul_byte_in_the_query_string_is_a_400(alice_client, ui_mail, url):
    response = alice_client.get(url)
    assert response.status_code == 400 and b"NUL" in response.content


def test_a_nul_byte_in_a_cid_path_is_a_400(alice_client, ui_mail):
    response = alice_client.get(f"/message/{ui_mail.html.id}/cid/logo%00@example.org")
    assert response.status_code == 400
    assert alice_client.get(f"/message/{ui_mail.html.id}/cid/logo@example.org").status_code == 200


def test_a_nul_byte_in_a_posted_field_is_refused_by_the_form(alice_client, ui_mail):
    response = compose_post(alice_client, reverse("mailbox:compose"), account=ui_mail.alice_gmail.id,
                            to="carol@example.org", subject="a\x00b")  # fmt: skip
    assert response.status_code == 400 and "Null characters are not allowed." in response.content.decode()


def test_the_suggestions_still_work_without_nul(alice_client, ui_mail):
    assert alice_client.get("/suggest/?q=car").json()["results"][0]["email"] == "carol@example.org"
