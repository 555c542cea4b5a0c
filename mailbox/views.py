"""The mail UI. Views are thin: reads go through ``selectors``/``search``; writes through ``writeback``,
``outbox`` and ``compose``.

Every view is login-only and looks rows up through the requesting user, so another user's ids are a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import MailAccount
from accounts.services import account_display_name_set, providers_off
from mailbox import batches, compose, selectors, sync, writeback
from mailbox import folders as folders_service
from mailbox.access import mail_access_log_for_owner
from mailbox.drafts import draft_discard, draft_saved
from mailbox.forms import (
    ATTACHMENTS_MAX_BYTES,
    BulkActionForm,
    ComposeForm,
    DisplayNamesForm,
    ScheduleForm,
    SearchForm,
    SendingPreferencesForm,
    SignatureDefaultsForm,
    SignatureForm,
    TemplateForm,
    addresses_format,
    header_value_flatten,
)
from mailbox.identities import default_sender_value, senders_for
from mailbox.mail_templates import (
    KNOWN,
    SHARE_PERMISSION,
    outgoing_variable_problems,
    template_apply,
    template_attachments_add,
    templates_editable_by,
    templates_for,
)
from mailbox.models import INLINE_IMAGE_TYPES, AttachmentBlob, Folder, Message, OutgoingMessage, Signature, Thread
from mailbox.outbox import (
    outgoing_check_again,
    outgoing_queue,
    outgoing_retry,
    outgoing_send_anyway,
    outgoing_unsend,
)
from mailbox.pdfpreview import PAGES_SHOWN, SIZE_MAX_BYTES, PdfPreviewError, pdf_page_count, pdf_page_png
from mailbox.sanitize import html_for_editor, html_has_remote_images, html_sanitize, message_body_csp, text_render
from mailbox.search import highlight_terms, threads_search_by_account
from mailbox.signatures import (
    signature_default,
    signature_defaults,
    signature_defaults_of,
    signature_defaults_save,
)
from mailhub.http import AuthenticatedHttpRequest
from providers import registry
from providers.base import ChangeKind, MessageChange
from providers.errors import ProviderError, error_message

UNDO_SESSION_KEY = "mailhub_undo"
_BULK_CHANGES = {
    "read": ChangeKind.READ,
    "unread": ChangeKind.UNREAD,
    "star": ChangeKind.STAR,
    "unstar": ChangeKind.UNSTAR,
    "archive": ChangeKind.ARCHIVE,
    "trash": ChangeKind.TRASH,
    "move": ChangeKind.MOVE,
    "delete_forever": ChangeKind.DELETE_FOREVER,
}


def _chrome(request: AuthenticatedHttpRequest) -> dict:
    """What every mail page shows around its content: the sidebar, the poll interval, and the version of what
    it shows (see :func:`changes`)."""
    counts = selectors.sidebar_counts(user=request.user)
    off = providers_off()
    return {
        "nav": selectors.sidebar_get(user=request.user, off=off),
        "counts": counts,
        "poll_seconds": _poll_seconds(),
        **selectors.live_watch(user=request.user, counts=counts, off=off),
    }


@login_required
@require_GET
def changes(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Asked every few seconds by every open page with the version it shows: 204 (nothing to send) while that is
    still current; otherwise the watcher again with the new version and an ``HX-Trigger: mail-changed``, on
    which the page's sidebar, list and account table reload themselves."""
    context = selectors.live_watch(user=request.user)
    if request.GET.get("v") == context["mail_version"]:
        return HttpResponse(status=204)
    response = render(request, "mailbox/_changes.html", context)
    response["HX-Trigger"] = "mail-changed"
    return response


def _poll_seconds() -> int:
    """Poll as often as the worker syncs, within 5..60 s, so new mail shows up within one sync interval."""
    return max(5, min(60, settings.MAILHUB_SYNC_INTERVAL_SECONDS))


def _list_render(
    request: AuthenticatedHttpRequest, *, threads: selectors.Threads, title: str, folder: Folder | None = None, **extra
) -> HttpResponse:
    show_recipients = folder is not None and folder.role in (Folder.Role.SENT, Folder.Role.DRAFTS)
    if show_recipients:
        threads = selectors.with_recipients(threads)  # who it went to, not the user's own name on every row
    page = selectors.thread_page(threads=threads, cursor=request.GET.get("cursor"), before=request.GET.get("before"))
    context = {
        "page": page,
        "title": title,
        "folder": folder,
        "show_recipients": show_recipients,
        "first_page": not (request.GET.get("cursor") or page.newer_cursor),
        **extra,
    }
    if request.htmx and request.GET.get("partial") == "list":
        context["poll_seconds"] = _poll_seconds()
        context["show_account"] = folder is None and selectors.accounts_for_user(user=request.user).count() > 1
        return render(request, "mailbox/_list_poll.html", context)
    context.update(_chrome(request))
    # Rows of several mailboxes side by side say which mailbox each is in.
    context["show_account"] = folder is None and len(context["nav"]) > 1
    return render(request, "mailbox/list.html", context)


@login_required
@require_GET
def inbox(request: AuthenticatedHttpRequest) -> HttpResponse:
    threads = selectors.threads_in_inboxes(user=request.user)
    return _list_render(request, threads=threads, title=_("All inboxes"))


@login_required
@require_GET
def folder(request: AuthenticatedHttpRequest, folder_id: int) -> HttpResponse:
    current = selectors.folder_get(user=request.user, folder_id=folder_id)
    threads = selectors.threads_in_folder(folder=current)
    title = f"{current.label} · {current.account.email}"
    in_trash = current.role == Folder.Role.TRASH
    deletes_forever = in_trash and registry.get(current.account.provider).deletes_forever
    return _list_render(
        request, threads=threads, title=title, folder=current, in_trash=in_trash, deletes_forever=deletes_forever
    )


@login_required
@require_GET
def all_mail(request: AuthenticatedHttpRequest, account_id: int) -> HttpResponse:
    account = get_object_or_404(selectors.accounts_for_user(user=request.user), pk=account_id)
    threads = selectors.threads_all_mail(account=account)
    title = f"{Folder.Role.ALL.label} · {account.email}"
    return _list_render(request, threads=threads, title=title)


@login_required
@require_GET
def search(request: AuthenticatedHttpRequest) -> HttpResponse:
    accounts = selectors.accounts_for_user(user=request.user)
    folders = Folder.objects.filter(account__user=request.user, is_selectable=True).select_related("account")
    form = SearchForm(request.GET or None, accounts=accounts, folders=folders)
    terms: list[str] = []
    threads: selectors.Threads = []
    if form.is_valid() and not form.to_query().is_empty:
        query = form.to_query()
        threads = threads_search_by_account(user=request.user, query=query)
        terms = highlight_terms(query.text)
    query_string = request.GET.copy()
    query_string.pop("cursor", None)
    query_string.pop("before", None)
    return _list_render(
        request,
        threads=threads,
        title=_("Search"),
        search_form=form,
        is_search=True,
        search_qs=query_string.urlencode(),
        highlight=terms,
    )


@login_required
@require_GET
def thread(request: AuthenticatedHttpRequest, thread_id: int) -> HttpResponse:
    current = selectors.thread_get(user=request.user, thread_id=thread_id)
    messages = selectors.thread_messages(thread=current)
    show_images = {int(i) for i in request.GET.getlist("images") if i.isdigit()}
    items = []
    for message in messages:
        html = message.body_html
        # Inline parts the HTML shows in place are not listed again as attachments.
        shown = {a.id for a in message.attachments.all() if a.content_id and a.content_id in html}
        items.append(
            {
                "message": message,
                "text_html": None if html else text_render(message.body_text),
                "remote_images": bool(html) and message.id not in show_images and html_has_remote_images(html),
                "show_images": message.id in show_images,
                "attachments": [a for a in message.attachments.all() if a.id not in shown],
            }
        )
    in_trash = not current.messages.exclude(folders__role=Folder.Role.TRASH).exists()
    context = {
        "thread": current,
        "items": items,
        "in_trash": in_trash,
        "deletes_forever": in_trash and registry.get(current.account.provider).deletes_forever,
        "unread_ids": [m.id for m in messages if not m.is_read],
        "drafts": selectors.thread_drafts(user=request.user, thread=current),
        "move_folders": Folder.objects.filter(account=current.account, is_selectable=True),
        **_chrome(request),
    }
    return render(request, "mailbox/thread.html", context)


@login_required
@require_POST
def thread_read(request: AuthenticatedHttpRequest, thread_id: int) -> HttpResponse:
    """Called by the thread page once it has been shown (a POST, so it carries the CSRF token)."""
    current = selectors.thread_get(user=request.user, thread_id=thread_id)
    ids = list(current.messages.filter(is_read=False).values_list("id", flat=True))
    if ids:
        writeback.messages_change(user=request.user, message_ids=ids, change=MessageChange(kind=ChangeKind.READ))
    return HttpResponse(status=204)


@login_required
@require_POST
def bulk_action(request: AuthenticatedHttpRequest) -> HttpResponse:
    data = request.POST.copy()
    for action in ("star", "unstar"):  # a row's own star button acts on that row alone
        row = request.POST.get(f"{action}_thread", "")
        if row.isdigit():
            data.setlist("threads", [row])
            data["action"] = action
    thread_ids = [int(i) for i in data.getlist("threads") if i.isdigit()]
    folders = Folder.objects.filter(account__user=request.user, is_selectable=True)
    form = BulkActionForm(data, thread_ids=thread_ids, folders=folders)
    back = _back(request)
    if not form.is_valid():
        flash.error(request, _("Select at least one conversation and an action."))
        return redirect(back)
    message_ids = selectors.thread_message_ids(user=request.user, thread_ids=form.cleaned_data["threads"])
    if not message_ids:
        raise Http404
    if form.cleaned_data["action"] == "delete_forever":
        message_ids = selectors.deletable_forever(user=request.user, message_ids=message_ids)
    target = form.cleaned_data.get("folder")
    change = MessageChange(
        kind=_BULK_CHANGES[form.cleaned_data["action"]], folder_remote_id=target.remote_id if target else ""
    )
    if target:
        # A move is per account: only the selected messages that live in the target folder's account.
        selected = Thread.objects.filter(id__in=form.cleaned_data["threads"], account__user=request.user)
        elsewhere = selected.exclude(account=target.account).count()
        if elsewhere:
            flash.warning(request, _not_moved(elsewhere, target))
        message_ids = list(
            Message.objects.filter(id__in=message_ids, account=target.account).values_list("id", flat=True)
        )
    undo = writeback.undo_plan(
        user=request.user, message_ids=message_ids, change=change, origin=_move_origin(request, target)
    )
    count = writeback.messages_change(user=request.user, message_ids=message_ids, change=change)
    updated = ngettext("%(count)d message updated.", "%(count)d messages updated.", count)
    _flash_undoable(request, updated % {"count": count}, undo)
    return redirect(back)


def _move_origin(request: AuthenticatedHttpRequest, target: Folder | None) -> Folder | None:
    """Where a move takes mail from: the folder the list showed, else (All inboxes, a thread) the inbox."""
    if target is None:
        return None
    shown = request.POST.get("from_folder", "")
    folders = Folder.objects.filter(account=target.account, is_selectable=True)
    if shown.isdigit():
        return folders.filter(pk=int(shown)).first()
    return folders.filter(role=Folder.Role.INBOX).first()


def _back(request: AuthenticatedHttpRequest) -> str:
    """Where a form's ``next`` says to return to, if it is on this site; else the inbox."""
    back = request.POST.get("next") or reverse("mailbox:inbox")
    return (
        back if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}) else reverse("mailbox:inbox")
    )


def _flash_undoable(request: AuthenticatedHttpRequest, text: str, undo: writeback.Undo | None) -> None:
    """Say what was done; where it can be taken back, the message carries an Undo button (see base.html)."""
    if undo is None:
        request.session.pop(UNDO_SESSION_KEY, None)
        flash.success(request, text)
        return
    changes = [[str(change.kind), change.folder_remote_id] for change in undo.changes]
    request.session[UNDO_SESSION_KEY] = {"changes": changes, "ids": undo.message_ids}
    flash.success(request, text, extra_tags="undo")


@login_required
@require_POST
def undo(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Take back the last change the user made from a list or a thread (once)."""
    back = _back(request)
    plan = request.session.pop(UNDO_SESSION_KEY, None)
    if not plan:
        flash.info(request, _("There is nothing to undo."))
        return redirect(back)
    if "outgoing" in plan:
        return _unsend(request, outgoing_id=plan["outgoing"], then_edit=True)
    count = 0
    for kind, folder_remote_id in plan["changes"]:
        change = MessageChange(kind=ChangeKind(kind), folder_remote_id=folder_remote_id)
        count = writeback.messages_change(user=request.user, message_ids=plan["ids"], change=change)
    undone = ngettext(
        "Undone: %(count)d message is back as it was.", "Undone: %(count)d messages are back as they were.", count
    )
    flash.success(request, undone % {"count": count})
    return redirect(back)


def _unsend(request: AuthenticatedHttpRequest, *, outgoing_id: int, then_edit: bool) -> HttpResponse:
    """Take a queued message back to Drafts (undo send, cancel or change a scheduled one), if it has not gone."""
    outgoing = selectors.outgoing_get(user=request.user, outgoing_id=outgoing_id)
    if not outgoing_unsend(outgoing=outgoing):
        flash.error(request, _("Too late: the message is already on its way."))
        return redirect("mailbox:outbox")
    flash.success(request, _("Not sent: the message is back in Drafts."))
    return redirect("mailbox:draft", outgoing.pk) if then_edit else redirect("mailbox:outbox")


@login_required
@require_POST
def outbox_unsend(request: AuthenticatedHttpRequest, outgoing_id: int) -> HttpResponse:
    """The outbox's Undo, Change and Cancel on a message that has not gone yet ("edit" opens it again)."""
    return _unsend(request, outgoing_id=outgoing_id, then_edit=request.POST.get("then") == "edit")


@login_required
@require_POST
def trash_empty(request: AuthenticatedHttpRequest, folder_id: int) -> HttpResponse:
    """Delete every message in a Trash folder for good (where its provider allows it)."""
    trash = selectors.folder_get(user=request.user, folder_id=folder_id)
    if trash.role != Folder.Role.TRASH:
        raise Http404
    in_trash = list(trash.messages.values_list("pk", flat=True))
    message_ids = selectors.deletable_forever(user=request.user, message_ids=in_trash)
    change = MessageChange(kind=ChangeKind.DELETE_FOREVER)
    count = writeback.messages_change(user=request.user, message_ids=message_ids, change=change)
    deleted = ngettext("%(count)d message deleted forever.", "%(count)d messages deleted forever.", count)
    flash.success(request, deleted % {"count": count})
    return redirect("mailbox:folder", trash.id)


def _not_moved(count: int, target: Folder) -> str:
    words = ngettext(
        "%(count)d conversation is in another mailbox than %(email)s and was not moved: mail moves only within "
        "its own mailbox.",
        "%(count)d conversations are in other mailboxes than %(email)s and were not moved: mail moves only "
        "within its own mailbox.",
        count,
    )
    return words % {"count": count, "email": target.account.email}


def _cid_url(message_id: int):
    def build(content_id: str) -> str:
        return reverse("mailbox:message_cid", args=[message_id, quote(content_id, safe="@.-_")])

    return build


@xframe_options_sameorigin  # the thread page frames it; every other page is DENY
@login_required
@require_GET
def message_body(request: AuthenticatedHttpRequest, message_id: int) -> HttpResponse:
    """One message's HTML as a document for the thread page's sandboxed iframe."""
    message = selectors.message_get(user=request.user, message_id=message_id)
    show_images = request.GET.get("images") == "1"
    safe = html_sanitize(html=message.body_html, cid_url=_cid_url(message.id), show_images=show_images)
    response = render(request, "mailbox/message_body.html", {"body": safe.html})
    origin = f"{request.scheme}://{request.get_host()}"
    response["Content-Security-Policy"] = message_body_csp(origin=origin, show_images=show_images)
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    return response


def _download(blob: AttachmentBlob, *, filename: str, content_type: str, inline: bool) -> FileResponse:
    response = FileResponse(
        blob.open(),
        as_attachment=not inline,
        filename=filename or "attachment",
        content_type=content_type if inline else "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def message_cid(request: AuthenticatedHttpRequest, message_id: int, content_id: str) -> FileResponse:
    """An inline image of a message (``cid:`` URL). Only raster images are served inline, never SVG or HTML."""
    part = selectors.inline_part_get(user=request.user, message_id=message_id, content_id=content_id)
    content_type = part.content_type.lower()
    if content_type not in INLINE_IMAGE_TYPES:
        raise Http404
    return _download(part.blob, filename=part.filename, content_type=content_type, inline=True)


@login_required
@require_GET
def attachment(request: AuthenticatedHttpRequest, attachment_id: int) -> FileResponse:
    part = selectors.attachment_get(user=request.user, attachment_id=attachment_id)
    return _download(part.blob, filename=part.filename, content_type=part.content_type, inline=False)


@login_required
@require_GET
def attachment_preview(request: AuthenticatedHttpRequest, attachment_id: int) -> HttpResponse | FileResponse:
    """A raster image attachment shown inline (never SVG or HTML: those only download), sandboxed and nosniff;
    a PDF as a page of its pages rendered to images (see :mod:`mailbox.pdfpreview`)."""
    part = selectors.attachment_get(user=request.user, attachment_id=attachment_id)
    if part.shows_inline:
        return _download(part.blob, filename=part.filename, content_type=part.content_type.lower(), inline=True)
    if not part.is_pdf:
        raise Http404
    page_count, error = 0, ""
    try:
        page_count = pdf_page_count(_pdf_bytes(part.blob))
    except PdfPreviewError:
        error = _("This PDF cannot be previewed (it may be damaged, encrypted or too large). Download it to open it.")
    pages = range(1, min(page_count, PAGES_SHOWN) + 1)
    context = {"attachment": part, "page_count": page_count, "pages": pages, "error": error}
    return render(request, "mailbox/pdf_preview.html", context)


@login_required
@require_GET
def attachment_pdf_page(request: AuthenticatedHttpRequest, attachment_id: int, page: int) -> HttpResponse:
    """Page ``page`` (from 1) of a PDF attachment as a PNG."""
    part = selectors.attachment_get(user=request.user, attachment_id=attachment_id)
    if not part.is_pdf or not 1 <= page <= PAGES_SHOWN:
        raise Http404
    try:
        png = pdf_page_png(_pdf_bytes(part.blob), page - 1)
    except PdfPreviewError as exc:
        raise Http404 from exc
    response = HttpResponse(png, content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _pdf_bytes(blob: AttachmentBlob) -> bytes:
    if blob.size > SIZE_MAX_BYTES:
        raise PdfPreviewError("too large to preview")
    with blob.open() as file:
        return file.read()


@login_required
@require_GET
def outgoing_attachment(request: AuthenticatedHttpRequest, attachment_id: int) -> FileResponse:
    part = selectors.outgoing_attachment_get(user=request.user, attachment_id=attachment_id)
    return _download(part.blob, filename=part.filename, content_type=part.content_type, inline=False)


# --- Compose ------------------------------------------------------------------------------------


def _compose_render(
    request: AuthenticatedHttpRequest,
    *,
    form: ComposeForm,
    draft: OutgoingMessage | None,
    schedule_form: ScheduleForm | None = None,
    batch: dict | None = None,
    status: int = 200,
):
    attachments = list(draft.attachments.all()) if draft else []
    context = {
        "form": form,
        "draft": draft,
        "attachments": attachments,
        "attachments_max_bytes": ATTACHMENTS_MAX_BYTES,
        "attached_bytes": sum(a.size for a in attachments),
        "schedule_form": schedule_form or ScheduleForm(),
        "templates": templates_for(user=request.user),
        "batch": batch or {},
        "signatures": selectors.signatures_for(user=request.user),
        "signature_defaults": signature_defaults(
            senders=form.senders.values(), reply=draft is not None and draft.kind != OutgoingMessage.Kind.NEW
        ),
        **_chrome(request),
    }
    return render(request, "mailbox/compose.html", context, status=status)


def _draft_initial(draft: OutgoingMessage) -> dict:
    return {
        "account": f"{draft.account_id}/{draft.from_alias}" if draft.from_alias else str(draft.account_id),
        "to": header_value_flatten(addresses_format(draft.to)),
        "cc": header_value_flatten(addresses_format(draft.cc)),
        "bcc": header_value_flatten(addresses_format(draft.bcc)),
        "subject": header_value_flatten(draft.subject),
        "body_text": draft.body_text,
        "body_html": html_for_editor(html=draft.body_html) if draft.body_html else "",
        "body_format": "html" if draft.body_html else "text",
        "signature": draft.signature_id,
    }


@transaction.atomic  # the tasks it queues (the draft's sync, the send) start once all of it is done
def _compose_post(request: AuthenticatedHttpRequest, draft: OutgoingMessage | None) -> HttpResponse:
    action = request.POST.get("action", "save")
    autosave = action == "autosave"
    # A draft is saved to any of the user's mailboxes; only one whose provider is on can send it.
    sending = action in ("send", "schedule", "batch_send")
    accounts = (selectors.accounts_for_sending if sending else selectors.accounts_for_user)(user=request.user)
    form = ComposeForm(
        request.POST,
        request.FILES,
        accounts=accounts,
        signatures=selectors.signatures_for(user=request.user),
        existing_attachment_bytes=compose.attachments_size(draft=draft),
        saving_draft=action in {"autosave", "save"},
    )
    if not form.is_valid():
        if autosave:
            return JsonResponse({"saved": False, "errors": form.errors.get_json_data()}, status=400)
        return _compose_render(request, form=form, draft=draft, status=400)
    remove_ids = [int(i) for i in request.POST.getlist("remove_attachment") if i.isdigit()]
    draft = compose.draft_save(
        draft=draft,
        account=form.cleaned_data["account"],
        data=form.cleaned_data,
        files=form.cleaned_data["files"],
        remove_ids=remove_ids,
    )
    draft_saved(draft=draft)
    edit_url = reverse("mailbox:draft", args=[draft.id])
    if autosave:
        saved_at = timezone.localtime(draft.updated_at).strftime("%H:%M:%S")
        return JsonResponse({"saved": True, "id": draft.id, "url": edit_url, "saved_at": saved_at})
    if action in ("send", "schedule"):
        if not form.require_recipients():
            return _compose_render(request, form=form, draft=draft, status=400)
        problems = outgoing_variable_problems(draft)
        if problems:  # nothing is queued with a variable it cannot fill
            for problem in problems:
                form.add_error(None, problem)
            return _compose_render(request, form=form, draft=draft, status=400)
        return _send_or_schedule(request, draft=draft, schedule=action == "schedule")
    if action in ("batch_preview", "batch_send"):
        return _batch_post(request, form=form, draft=draft, send=action == "batch_send")
    if action == "template":
        template = get_object_or_404(templates_for(user=request.user), pk=request.POST.get("template") or 0)
        template_apply(draft=draft, template=template)
        return redirect(edit_url)
    if remove_ids or form.cleaned_data["files"]:
        return redirect(edit_url)
    flash.success(request, _("Draft saved."))
    return redirect(edit_url)


def _batch_post(request: AuthenticatedHttpRequest, *, form: ComposeForm, draft: OutgoingMessage, send: bool):
    """Send to a list: read it whole, show the first messages, or queue one copy per recipient."""
    upload = request.FILES.get("batch_csv")
    try:
        if upload is not None:
            recipients = batches.recipients_from_csv(upload.read())
        else:
            recipients = batches.recipients_from_text(request.POST.get("batch_list", ""))
    except batches.RecipientListError as exc:
        return _compose_render(request, form=form, draft=draft, batch={"problems": exc.problems}, status=400)
    if not send:
        previews = batches.batch_preview(draft=draft, recipients=recipients)
        return _compose_render(request, form=form, draft=draft, batch={"previews": previews, "count": len(recipients)})
    created = batches.batch_create(draft=draft, recipients=recipients, user=request.user)
    return redirect("mailbox:batch", created.pk)


@login_required
@require_GET
def batch(request: AuthenticatedHttpRequest, batch_id: int) -> HttpResponse:
    """A batch's progress: every recipient's message and its state."""
    current = selectors.batch_get(user=request.user, batch_id=batch_id)
    rows = current.messages.order_by("pk")
    context = {"batch": current, "rows": rows, **_chrome(request)}
    template = "mailbox/_batch_rows.html" if request.htmx else "mailbox/batch.html"
    return render(request, template, context)


@login_required
@require_POST
def batch_cancel(request: AuthenticatedHttpRequest, batch_id: int) -> HttpResponse:
    stopped = batches.batch_cancel_rest(batch=selectors.batch_get(user=request.user, batch_id=batch_id))
    flash.success(
        request,
        ngettext(
            "Stopped: %(count)d message will not be sent.", "Stopped: %(count)d messages will not be sent.", stopped
        )
        % {"count": stopped},
    )
    return redirect("mailbox:batch", batch_id)


def _send_or_schedule(request: AuthenticatedHttpRequest, *, draft: OutgoingMessage, schedule: bool) -> HttpResponse:
    if schedule:
        when = ScheduleForm(request.POST)
        if not when.is_valid():
            form = ComposeForm(
                initial=_draft_initial(draft),
                accounts=selectors.accounts_for_user(user=request.user),
                signatures=selectors.signatures_for(user=request.user),
            )
            return _compose_render(request, form=form, draft=draft, schedule_form=when, status=400)
        scheduled_for = when.cleaned_data["scheduled_for"]
        outgoing_queue(outgoing=draft, scheduled_for=scheduled_for)
        when_text = date_format(scheduled_for, "DATETIME_FORMAT")  # in the zone it was picked in
        flash.success(
            request,
            _("Scheduled for %(when)s — change or cancel it below.") % {"when": when_text},
        )
        return redirect("mailbox:outbox")
    hold = selectors.sending_preferences(user=request.user).undo_send_seconds
    outgoing_queue(outgoing=draft, hold=timedelta(seconds=hold))
    if not hold:
        request.session.pop(UNDO_SESSION_KEY, None)
        flash.success(request, _("Your message is in the outbox and will be sent shortly."))
        return redirect("mailbox:outbox")
    request.session[UNDO_SESSION_KEY] = {"outgoing": draft.pk}
    flash.success(request, _("Sending…"), extra_tags=f"undo undo-send undo-seconds-{hold}")
    return redirect("mailbox:outbox")


@login_required
@require_http_methods(["GET", "POST"])
def compose_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _compose_post(request, None)
    if not selectors.accounts_for_user(user=request.user).exists():
        flash.info(request, _("Connect a mail account first."))
        return redirect("accounts:list")
    accounts = selectors.accounts_for_sending(user=request.user)
    account = accounts.filter(status="active").first() or accounts.first()
    if account is None:
        flash.error(request, _("None of your mailboxes can send now: their provider is turned off in Mail settings."))
        return redirect("mailbox:inbox")
    sender = default_sender_value(account)
    signature = signature_default(account=account, from_alias=sender.partition("/")[2], reply=False)
    initial = {"account": sender, "to": request.GET.get("to", ""), "signature": signature}
    form = ComposeForm(initial=initial, accounts=accounts, signatures=selectors.signatures_for(user=request.user))
    return _compose_render(request, form=form, draft=None)


@login_required
@require_POST
def compose_clean(request: AuthenticatedHttpRequest) -> JsonResponse:
    """HTML pasted or dropped into a rich-text editor, cleaned before the page parses it (see editor.js)."""
    return JsonResponse({"html": html_for_editor(html=request.POST.get("html", ""))})


@login_required
@require_POST
def compose_from_message(request: AuthenticatedHttpRequest, message_id: int, kind: str) -> HttpResponse:
    if kind not in {"reply", "reply_all", "forward"}:
        raise Http404
    source = selectors.message_get(user=request.user, message_id=message_id)
    draft = compose.draft_from_source_create(source=source, kind=kind)
    return redirect("mailbox:draft", draft.id)


@login_required
@require_http_methods(["GET", "POST"])
def draft(request: AuthenticatedHttpRequest, outgoing_id: int) -> HttpResponse:
    current = selectors.outgoing_get(user=request.user, outgoing_id=outgoing_id, status=OutgoingMessage.Status.DRAFT)
    if request.method == "POST":
        return _compose_post(request, current)
    accounts = selectors.accounts_for_user(user=request.user)
    form = ComposeForm(
        initial=_draft_initial(current), accounts=accounts, signatures=selectors.signatures_for(user=request.user)
    )
    return _compose_render(request, form=form, draft=current)


@login_required
@require_POST
def draft_delete(request: AuthenticatedHttpRequest, outgoing_id: int) -> HttpResponse:
    current = selectors.outgoing_get(user=request.user, outgoing_id=outgoing_id, status=OutgoingMessage.Status.DRAFT)
    draft_discard(draft=current)
    flash.success(request, _("Draft discarded."))
    return redirect("mailbox:drafts")


@login_required
@require_GET
def drafts(request: AuthenticatedHttpRequest) -> HttpResponse:
    context = {"outgoing": selectors.drafts_for_user(user=request.user)[:200], "is_drafts": True, **_chrome(request)}
    return render(request, "mailbox/outbox.html", context)


@login_required
@require_GET
def outbox(request: AuthenticatedHttpRequest) -> HttpResponse:
    context = {
        "outgoing": selectors.outbox_for_user(user=request.user)[:200],
        "batches": selectors.batches_for(user=request.user)[:20],
        **_chrome(request),
    }
    if request.htmx:
        return render(request, "mailbox/_outbox_rows.html", context)
    return render(request, "mailbox/outbox.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def preferences(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Undo send's delay, the name on each mailbox, and signatures (the last have their own forms below)."""
    current = selectors.sending_preferences(user=request.user)
    data = request.POST if request.method == "POST" else None
    form = SendingPreferencesForm(data, instance=current)
    names = DisplayNamesForm(data, accounts=selectors.accounts_for_user(user=request.user))
    if request.method == "POST" and form.is_valid() and names.is_valid():
        form.save()
        for account, name in names.names():
            if name != account.display_name:
                account_display_name_set(account=account, name=name)
        flash.success(request, _("Preferences saved."))
        return redirect("mailbox:preferences")
    return _preferences_render(request, form=form, names=names)


def _preferences_render(request: AuthenticatedHttpRequest, *, status: int = 200, **forms) -> HttpResponse:
    accounts = list(selectors.accounts_for_user(user=request.user))
    signatures = selectors.signatures_for(user=request.user)
    context = {
        "form": SendingPreferencesForm(instance=selectors.sending_preferences(user=request.user)),
        "names": DisplayNamesForm(accounts=accounts),
        "signatures": [(s, SignatureForm(instance=s, prefix=f"s{s.pk}")) for s in signatures],
        "new_signature": SignatureForm(prefix="new"),
        "defaults": SignatureDefaultsForm(
            senders=senders_for(accounts), signatures=signatures, defaults=signature_defaults_of(accounts)
        ),
        **forms,
        **_chrome(request),
    }
    return render(request, "mailbox/preferences.html", context, status=status)


@login_required
@require_POST
def signature_save(request: AuthenticatedHttpRequest, signature_id: int | None = None) -> HttpResponse:
    """Add a signature, or change one of the user's own."""
    signature = (
        get_object_or_404(selectors.signatures_for(user=request.user), pk=signature_id) if signature_id else None
    )
    prefix = f"s{signature_id}" if signature else "new"
    form = SignatureForm(request.POST, instance=signature or Signature(user=request.user), prefix=prefix)
    if not form.is_valid():
        forms = {"new_signature": form} if signature is None else {}
        return _preferences_render(request, status=400, **forms)
    form.save()
    flash.success(request, _("Signature saved."))
    return redirect(reverse("mailbox:preferences") + "#signatures")


@login_required
@require_POST
def signature_delete(request: AuthenticatedHttpRequest, signature_id: int) -> HttpResponse:
    get_object_or_404(selectors.signatures_for(user=request.user), pk=signature_id).delete()
    flash.success(request, _("Signature deleted. Drafts that had it go without one."))
    return redirect(reverse("mailbox:preferences") + "#signatures")


@login_required
@require_POST
def signature_defaults_update(request: AuthenticatedHttpRequest) -> HttpResponse:
    accounts = list(selectors.accounts_for_user(user=request.user))
    form = SignatureDefaultsForm(
        request.POST,
        senders=senders_for(accounts),
        signatures=selectors.signatures_for(user=request.user),
        defaults=signature_defaults_of(accounts),
    )
    if not form.is_valid():
        return _preferences_render(request, status=400, defaults=form)
    signature_defaults_save(chosen=form.chosen())
    flash.success(request, _("Preferences saved."))
    return redirect(reverse("mailbox:preferences") + "#signatures")


@login_required
@require_http_methods(["GET", "POST"])
def templates_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's templates and the shared ones; a new one is added here."""
    may_share = request.user.has_perm(SHARE_PERMISSION)
    new = TemplateForm(request.POST or None, request.FILES or None, may_share=may_share, prefix="new")
    if request.method == "POST" and new.is_valid():
        template = new.save(commit=False)
        template.owner = request.user
        template.save()
        template_attachments_add(template=template, files=new.cleaned_data["files"])
        flash.success(request, _("Template saved."))
        return redirect("mailbox:templates")
    return _templates_render(request, new=new, status=400 if request.method == "POST" else 200)


def _templates_render(request: AuthenticatedHttpRequest, *, status: int = 200, **forms) -> HttpResponse:
    may_share = request.user.has_perm(SHARE_PERMISSION)
    editable = set(templates_editable_by(user=request.user).values_list("pk", flat=True))
    rows = [
        (t, TemplateForm(instance=t, may_share=may_share, prefix=f"t{t.pk}") if t.pk in editable else None)
        for t in templates_for(user=request.user).prefetch_related("attachments")
    ]
    context = {
        "rows": rows,
        "new": TemplateForm(may_share=may_share, prefix="new"),
        "known_variables": KNOWN,
        **forms,
        **_chrome(request),
    }
    return render(request, "mailbox/templates.html", context, status=status)


@login_required
@require_POST
def template_save(request: AuthenticatedHttpRequest, template_id: int) -> HttpResponse:
    template = get_object_or_404(templates_editable_by(user=request.user), pk=template_id)
    may_share = request.user.has_perm(SHARE_PERMISSION)
    form = TemplateForm(request.POST, request.FILES, instance=template, may_share=may_share, prefix=f"t{template_id}")
    if not form.is_valid():
        flash.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("mailbox:templates")
    form.save()
    template_attachments_add(template=template, files=form.cleaned_data["files"])
    flash.success(request, _("Template saved."))
    return redirect("mailbox:templates")


@login_required
@require_POST
def template_delete(request: AuthenticatedHttpRequest, template_id: int) -> HttpResponse:
    get_object_or_404(templates_editable_by(user=request.user), pk=template_id).delete()
    flash.success(request, _("Template deleted."))
    return redirect("mailbox:templates")


# What a user can do with an outbox row: (the status it must be in, the service, what the page then says).
OUTBOX_ACTIONS = {
    "retry": (OutgoingMessage.Status.FAILED, outgoing_retry, gettext_lazy("Sending again.")),
    "check_again": (
        OutgoingMessage.Status.UNKNOWN,
        outgoing_check_again,
        gettext_lazy("Checking whether the message went out."),
    ),
    "send_anyway": (OutgoingMessage.Status.UNKNOWN, outgoing_send_anyway, gettext_lazy("Sending again.")),
}


@login_required
@require_POST
def outbox_action(request: AuthenticatedHttpRequest, outgoing_id: int, action: str) -> HttpResponse:
    status, service, done = OUTBOX_ACTIONS[action]
    service(outgoing=selectors.outgoing_get(user=request.user, outgoing_id=outgoing_id, status=status))
    flash.success(request, done)
    return redirect("mailbox:outbox")


@login_required
@require_POST
def account_sync(request: AuthenticatedHttpRequest, account_id: int) -> HttpResponse:
    account = selectors.accounts_for_user(user=request.user).filter(pk=account_id).first()
    if account is None:
        raise Http404
    sync.account_sync_queue(account=account)
    flash.success(request, _("Checking %(email)s for new mail.") % {"email": account.email})
    return redirect(_back(request))


@login_required
@require_GET
def folders(request: AuthenticatedHttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    tree = selectors.folders_tree(account=account)
    labels = registry.get(account.provider).folders_are_labels
    # What a new folder can go inside: the user's own folders, and an IMAP Inbox (a Gmail label cannot nest there).
    can_hold = {Folder.Role.USER} if labels else {Folder.Role.USER, Folder.Role.INBOX}
    context = {
        "account": account,
        "tree": tree,
        "parents": [f for f in tree if f.role in can_hold],
        "labels": labels,
        "name_max": folders_service.NAME_MAX,
        **_chrome(request),
    }
    return render(request, "mailbox/folders.html", context)


def _folder_change(request: AuthenticatedHttpRequest, account: MailAccount, change: Callable[[], str]) -> None:
    """Run a folder change and say how it went: done, refused by Mailhub (why), or refused by the provider."""
    try:
        flash.success(request, change())
    except folders_service.FolderProblem as exc:
        flash.error(request, str(exc))
    except ProviderError as exc:
        flash.error(request, exc.detail or error_message(exc.code, provider=account.provider_name))


@login_required
@require_POST
def folder_create(request: AuthenticatedHttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    parent_id = request.POST.get("parent", "")
    parent = selectors.folder_get(user=request.user, folder_id=int(parent_id)) if parent_id.isdigit() else None

    def create() -> str:
        created = folders_service.folder_create(account=account, name=request.POST.get("name", ""), parent=parent)
        return _("Created “%(name)s”.") % {"name": created.name}

    _folder_change(request, account, create)
    return redirect("mailbox:folders", account.pk)


@login_required
@require_POST
def folder_rename(request: AuthenticatedHttpRequest, folder_id: int) -> HttpResponse:
    current = selectors.folder_get(user=request.user, folder_id=folder_id)
    old = current.name

    def rename() -> str:
        renamed = folders_service.folder_rename(folder=current, name=request.POST.get("name", ""))
        return _("Renamed “%(old)s” to “%(new)s”.") % {"old": old, "new": renamed.name}

    _folder_change(request, current.account, rename)
    return redirect("mailbox:folders", current.account_id)


@login_required
@require_POST
def folder_delete(request: AuthenticatedHttpRequest, folder_id: int) -> HttpResponse:
    current = selectors.folder_get(user=request.user, folder_id=folder_id)

    def delete() -> str:
        gone = folders_service.folder_delete(folder=current)
        if gone:
            return ngettext(
                "Deleted “%(name)s” and the %(count)d message in it.",
                "Deleted “%(name)s” and the %(count)d messages in it.",
                gone,
            ) % {"name": current.name, "count": gone}
        return _("Deleted “%(name)s”.") % {"name": current.name}

    _folder_change(request, current.account, delete)
    return redirect("mailbox:folders", current.account_id)


@login_required
@require_GET
def suggest(request: AuthenticatedHttpRequest) -> JsonResponse:
    people = selectors.correspondents_suggest(user=request.user, prefix=request.GET.get("q", "")[:100])
    return JsonResponse({"results": people})


@login_required
@require_GET
def sidebar(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "mailbox/_sidebar.html", _chrome(request))


@login_required
@require_GET
def access_log(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Who used the "read all mail" right on the signed-in user's mailboxes, newest first."""
    return render(request, "mailbox/access_log.html", {"entries": mail_access_log_for_owner(user=request.user)})
