from django.urls import path

from mailbox import views

app_name = "mailbox"
urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("folder/<int:folder_id>/", views.folder, name="folder"),
    path("account/<int:account_id>/all/", views.all_mail, name="all_mail"),
    path("search/", views.search, name="search"),
    path("thread/<int:thread_id>/", views.thread, name="thread"),
    path("thread/<int:thread_id>/read/", views.thread_read, name="thread_read"),
    path("threads/action/", views.bulk_action, name="bulk_action"),
    path("threads/undo/", views.undo, name="undo"),
    path("folder/<int:folder_id>/empty/", views.trash_empty, name="trash_empty"),
    path("message/<int:message_id>/body/", views.message_body, name="message_body"),
    path("message/<int:message_id>/cid/<path:content_id>", views.message_cid, name="message_cid"),
    path("message/<int:message_id>/<str:kind>/", views.compose_from_message, name="compose_from_message"),
    path("attachment/<int:attachment_id>/", views.attachment, name="attachment"),
    path("attachment/<int:attachment_id>/preview/", views.attachment_preview, name="attachment_preview"),
    path("attachment/<int:attachment_id>/page/<int:page>.png", views.attachment_pdf_page, name="attachment_pdf_page"),
    path("compose/", views.compose_new, name="compose"),
    path("compose/clean/", views.compose_clean, name="compose_clean"),
    path("drafts/", views.drafts, name="drafts"),
    path("drafts/<int:outgoing_id>/", views.draft, name="draft"),
    path("drafts/<int:outgoing_id>/delete/", views.draft_delete, name="draft_delete"),
    path("drafts/attachment/<int:attachment_id>/", views.outgoing_attachment, name="outgoing_attachment"),
    path("outbox/", views.outbox, name="outbox"),
    path("outbox/<int:outgoing_id>/unsend/", views.outbox_unsend, name="outbox_unsend"),
    path("preferences/", views.preferences, name="preferences"),
    path("outbox/<int:outgoing_id>/retry/", views.outbox_action, {"action": "retry"}, name="outbox_retry"),
    path("outbox/<int:outgoing_id>/check/", views.outbox_action, {"action": "check_again"}, name="outbox_check_again"),
    path(
        "outbox/<int:outgoing_id>/send-anyway/",
        views.outbox_action,
        {"action": "send_anyway"},
        name="outbox_send_anyway",
    ),
    path("account/<int:account_id>/sync/", views.account_sync, name="account_sync"),
    path("suggest/", views.suggest, name="suggest"),
    path("sidebar/", views.sidebar, name="sidebar"),
    path("changes/", views.changes, name="changes"),
    path("access-log/", views.access_log, name="access_log"),
]
