"""Undo send and Schedule send in Debian's Chromium, with a real Celery worker and beat (on Redis) sending
through the sandbox Gmail API: nothing runs eagerly, so the message goes when the worker says it is time."""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy
from email.utils import parsedate_to_datetime

import pytest

from mailbox.models import OutgoingMessage
from tests.browser.test_mail_ui import gmail_ui, sign_in, wait_for  # noqa: F401 (gmail_ui: a fixture)
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_write_from_a_template_send_undo_then_schedule_and_see_it_sent_signed(
    page, live_server, alice, gmail_account, gmail_mailbox, gmail_behind_proxy, celery_processes
):
    processes = celery_processes("redis", gmail_behind_proxy)
    processes.worker()
    processes.beat()
    from mailbox.models import MessageTemplate, Signature, SignatureDefault

    template = MessageTemplate.objects.create(
        owner=alice, name="Close", subject="Quarter close", body_text="Hi {{ first_name }}, the books close Friday."
    )
    signature = Signature.objects.create(user=alice, name="Short", text="Alice")
    SignatureDefault.objects.create(account=gmail_account, for_new=signature)
    guard = sign_in(page, live_server, alice)

    # Write from a template, with the mailbox's default signature.
    page.goto(live_server.url + "/compose/")
    page.fill("input[name=to]", "Bob Stone <bob@example.org>")
    page.select_option("#id_template", str(template.pk))
    page.click("button[value=template]")
    page.wait_for_url("**/drafts/*/")
    assert page.input_value("input[name=subject]") == "Quarter close"
    assert page.input_value("textarea[name=body_text]") == template.body_text
    assert page.input_value("select[name=signature]") == str(signature.pk)

    # Send, then Undo from the toast (default: 10 seconds to change your mind).
    page.click("#send-button")
    page.wait_for_url("**/outbox/")
    toast = page.locator(".toast.undo-send")
    assert "Sending…" in toast.inner_text()
    screenshot(page, "undo-send")
    page.click("#undo-button")
    page.wait_for_url("**/drafts/*/")
    assert "Not sent: the message is back in Drafts." in page.inner_text(".flash")
    assert page.input_value("input[name=subject]") == "Quarter close"
    assert page.input_value("textarea[name=body_text]") == template.body_text  # as written: variables unfilled
    row = OutgoingMessage.objects.get(subject="Quarter close")
    assert row.status == OutgoingMessage.Status.DRAFT

    # Schedule it for the next whole minute at least 15 s away, as a user picks it (the page offers tomorrow
    # 08:00 first, in the browser's time zone).
    page.click(".schedule summary")
    assert page.input_value("#id_send_at").endswith("T08:00")
    assert page.input_value("#id_time_zone")
    soon = page.evaluate(
        """() => { const d = new Date(Date.now() + 15000 + 60000); d.setSeconds(0, 0);
        const p = n => String(n).padStart(2, "0");
        return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" +
        p(d.getMinutes()); }"""
    )
    page.fill("#id_send_at", soon)
    page.click("#schedule-button")
    page.wait_for_url("**/outbox/")
    assert "Scheduled" in page.inner_text("#outbox-table")
    assert page.locator("#outbox-table button", has_text="Cancel").count() == 1
    screenshot(page, "scheduled-send")
    assert gmail_mailbox.store.sent_messages(gmail_mailbox.email) == []  # not before its time

    # The worker sends it at its time; the open outbox shows it without a reload.
    assert wait_for(
        page, lambda: OutgoingMessage.objects.get(pk=row.pk).status == OutgoingMessage.Status.SENT, timeout=100
    ), processes.output()
    page.locator("#outbox-table .status-sent").wait_for(timeout=15_000)
    (sent,) = gmail_mailbox.store.sent_messages(gmail_mailbox.email)
    mail = message_from_bytes(sent.raw, policy=email_policy.default)
    row.refresh_from_db()
    assert mail["Subject"] == "Quarter close" and parsedate_to_datetime(mail["Date"]) == row.scheduled_for
    assert mail.get_body(("plain",)).get_content() == "Hi Bob, the books close Friday.\n\n-- \nAlice\n"
    assert row.sent_at >= row.scheduled_for
    guard.assert_clean()


def test_signature_follows_the_from_and_goes_on_once_above_the_quote(
    page,
    live_server,
    alice,
    gmail_ui,  # noqa: F811 (gmail_ui: a fixture)
    sends_at_once,
):
    from mailbox.identities import identities_store
    from mailbox.models import Signature, SignatureDefault
    from providers.base import SenderIdentity

    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    gmail.send_as_add(account.email, "sales@example.org", display_name="Alice (Sales)")
    identities_store(account=account, identities=[SenderIdentity("sales@example.org", "Alice (Sales)")])
    personal = Signature.objects.create(user=alice, name="Personal", text="Alice")
    sales = Signature.objects.create(user=alice, name="Sales", text="Alice Martin\nSales team")
    SignatureDefault.objects.create(account=account, for_new=personal, for_replies=personal)
    SignatureDefault.objects.create(account=account, from_alias="sales@example.org", for_new=sales, for_replies=sales)
    guard = sign_in(page, live_server, alice)

    page.goto(live_server.url + "/compose/")
    assert page.locator(".signature-preview:visible").inner_text() == "-- \nAlice"
    page.select_option("select[name=account]", f"{account.pk}/sales@example.org")
    assert page.input_value("select[name=signature]") == str(sales.pk)
    assert page.locator(".signature-preview:visible").inner_text() == "-- \nAlice Martin\nSales team"
    page.fill("input[name=to]", "Bob <bob@example.org>")
    page.fill("input[name=subject]", "Prices")
    page.locator("textarea[name=body_text]").fill("Prices attached.")
    screenshot(page, "compose-signature")
    page.click("#send-button")
    page.wait_for_url("**/outbox/")

    (sent,) = gmail.sent_messages(account.email)
    mail = message_from_bytes(sent.raw, policy=email_policy.default)
    assert mail["From"].addresses[0].addr_spec == "sales@example.org"
    assert mail.get_body(("plain",)).get_content() == "Prices attached.\n\n-- \nAlice Martin\nSales team\n"
    page.goto(live_server.url + "/preferences/")
    assert page.locator(".signature-edit").count() == 2
    screenshot(page, "preferences")
    guard.assert_clean()


def test_send_to_a_list_previews_then_follows_each_recipient(
    page,
    live_server,
    alice,
    gmail_ui,  # noqa: F811 (gmail_ui: a fixture)
):
    account, gmail = gmail_ui["account"], gmail_ui["gmail"]
    guard = sign_in(page, live_server, alice)
    page.goto(live_server.url + "/compose/")
    page.fill("input[name=subject]", "Hello {{ first_name }}")
    page.locator("textarea[name=body_text]").fill("News for {{ name }}.")
    page.click(".batch-send summary")
    page.fill("#id_batch_list", "Ann Lee <ann@example.org>\nBob Stone <bob@example.org>")
    page.click("button[value=batch_preview]")
    page.locator(".batch-preview").first.wait_for()
    assert "2 recipients." in page.inner_text(".batch-previews")
    assert page.locator(".batch-preview pre").first.inner_text() == "News for Ann Lee."
    screenshot(page, "batch-preview")
    page.click("#batch-send-button")
    page.wait_for_url("**/batches/*/")
    assert page.locator("#batch-table tbody tr").count() == 2
    # Gmail's pace: the first goes now (tasks run at once here), the second in about 3 minutes.
    assert "1 of 2 sent" in page.inner_text(".batch-counts")
    (sent,) = gmail.sent_messages(account.email)
    assert message_from_bytes(sent.raw, policy=email_policy.default)["Subject"] == "Hello Ann"
    screenshot(page, "batch")
    guard.assert_clean()
