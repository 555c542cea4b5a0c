"""The mail store in the Django admin: read only, hidden without ``mailbox.read_all_mail``, every use logged."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from mailbox.models import Folder, MailAccessLog, Message, OutgoingMessage, Thread

MAIL_MODELS = ["message", "thread", "outgoingmessage", "folder"]


def read_all_mail() -> Permission:
    return Permission.objects.get(content_type__app_label="mailbox", codename="read_all_mail")


@pytest.fixture
def auditor(db):
    """Staff, not superuser, given the right explicitly."""
    user = get_user_model().objects.create_user("auditor", "auditor@example.org", "auditor-password-1", is_staff=True)
    user.user_permissions.add(read_all_mail())
    return user


def test_a_superuser_without_the_right_sees_no_mail_in_the_admin(client, admin_user, ui_mail):
    client.force_login(admin_user)
    index = client.get("/admin/").content.decode()
    for model in MAIL_MODELS:
        assert f"/admin/mailbox/{model}/" not in index
    assert client.get("/admin/mailbox/message/").status_code == 403
    assert client.get(f"/admin/mailbox/message/{ui_mail.bob_message.pk}/change/").status_code == 403
    assert client.get(f"/admin/mailbox/thread/{ui_mail.bob_message.thread_id}/change/").status_code == 403
    assert client.get("/admin/mailbox/outgoingmessage/").status_code == 403
    assert "Only Bob may read this" not in client.get("/admin/mailbox/message/?q=Bob").content.decode()
    assert not MailAccessLog.objects.exists()


@pytest.mark.parametrize("model", MAIL_MODELS)
def test_adding_mail_in_the_admin_is_a_403_not_a_500(client, admin_user, ui_mail, model):
    admin_user.user_permissions.add(read_all_mail())  # even with the right: reading is not writing
    client.force_login(admin_user)
    before = [M.objects.count() for M in (Message, Thread, OutgoingMessage, Folder)]
    response = client.post(f"/admin/mailbox/{model}/add/", {"subject": "forged", "account": ui_mail.alice_gmail.pk})
    assert response.status_code == 403
    assert [M.objects.count() for M in (Message, Thread, OutgoingMessage, Folder)] == before


def test_a_holder_of_the_right_reads_but_cannot_change_or_delete(client, auditor, ui_mail):
    client.force_login(auditor)
    message = ui_mail.bob_message
    assert "/admin/mailbox/message/" in client.get("/admin/").content.decode()
    page = client.get(f"/admin/mailbox/message/{message.pk}/change/")
    assert page.status_code == 200 and "Bob&#x27;s private mail" in page.content.decode()
    assert 'name="subject"' not in page.content.decode()  # shown, not an input
    changed = client.post(f"/admin/mailbox/message/{message.pk}/change/", {"subject": "changed"})
    assert changed.status_code == 403
    assert client.post(f"/admin/mailbox/message/{message.pk}/delete/", {"post": "yes"}).status_code == 403
    delete_all = {"action": "delete_selected", "_selected_action": [message.pk], "post": "yes"}
    client.post("/admin/mailbox/message/", delete_all)
    assert Message.objects.get(pk=message.pk).subject == "Bob's private mail"
    outgoing = OutgoingMessage.objects.create(account=ui_mail.alice_gmail, subject="Draft to the board")
    assert client.post(f"/admin/mailbox/outgoingmessage/{outgoing.pk}/change/", {"status": "queued"}).status_code == 403
    assert OutgoingMessage.objects.get(pk=outgoing.pk).status == "draft"


def test_every_use_is_logged_and_shown_to_the_owner_only(client, auditor, alice, bob, ui_mail):
    client.force_login(auditor)
    client.get("/admin/mailbox/message/?q=private")
    client.get(f"/admin/mailbox/message/{ui_mail.bob_message.pk}/change/")
    client.get(f"/admin/mailbox/thread/{ui_mail.html.thread_id}/change/")
    listed, opened = MailAccessLog.objects.filter(owner=bob).order_by("id")
    assert (listed.reader, listed.action, listed.object_type) == (auditor, "list", "message")
    assert listed.description == "1 shown; search: private" and listed.account_email == "bob@gmail.example"
    assert (opened.action, opened.object_id) == ("view", ui_mail.bob_message.pk)
    assert opened.description == "Bob's private mail"
    alices = MailAccessLog.objects.get(owner=alice)
    assert (alices.object_type, alices.object_id, alices.description) == ("thread", ui_mail.html.thread_id,
                                                                          "Quarterly report")  # fmt: skip

    client.force_login(bob)
    page = client.get("/access-log/").content.decode()
    assert page.count("auditor") == 2 and "Bob&#x27;s private mail" in page and "Quarterly report" not in page
    client.force_login(alice)
    page = client.get("/access-log/").content.decode()
    assert "Quarterly report" in page and "private" not in page
    assert 'href="/access-log/"' in client.get("/accounts/").content.decode()


def test_the_right_given_through_a_group_works_and_is_logged(client, alice, ui_mail):
    group = Group.objects.create(name="Compliance")
    group.permissions.add(read_all_mail())
    reader = get_user_model().objects.create_user("reader", "r@example.org", "pw-123456789", is_staff=True)
    reader.groups.add(group)
    client.force_login(reader)
    assert client.get("/admin/mailbox/message/").status_code == 200
    assert set(MailAccessLog.objects.values_list("owner__username", flat=True)) == {"alice", "bob"}


def test_the_access_log_cannot_be_edited_or_deleted_through_the_admin(client, admin_user, auditor, ui_mail):
    client.force_login(auditor)
    client.get(f"/admin/mailbox/message/{ui_mail.bob_message.pk}/change/")
    entry = MailAccessLog.objects.get()
    client.force_login(admin_user)
    assert client.get("/admin/mailbox/mailaccesslog/").status_code == 200
    assert client.post(f"/admin/mailbox/mailaccesslog/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"/admin/mailbox/mailaccesslog/{entry.pk}/change/", {"reader_username": "x"}).status_code == 403
    assert MailAccessLog.objects.get().reader_username == "auditor"
