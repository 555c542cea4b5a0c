"""Message templates and their variables.

A draft started from a template (``OutgoingMessage.fills_variables``) may hold ``{{ name }}``-style variables;
they are filled from the (first) To recipient when the message is built for sending, in the subject and the
text, and escaped in rich text. A variable Mailhub does not know, or one the recipient has no value for, is an
error the composer shows before anything is queued: nothing is ever sent with literal braces. Other drafts are
sent as typed (someone writing about ``{{ }}`` syntax is not filling a template).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import formats, timezone
from django.utils.html import escape, linebreaks
from django.utils.translation import gettext as _

from mailbox.compose import upload_fields
from mailbox.models import MessageTemplate, OutgoingAttachment, OutgoingMessage, TemplateAttachment

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
KNOWN = ("first_name", "last_name", "name", "email", "my_name", "my_email", "today")
SHARE_PERMISSION = "mailbox.share_template"


class VariableError(ValueError):
    """A variable that cannot be filled; ``str()`` says which and why, in the user's words."""


def variables_in(*texts: str) -> list[str]:
    """The variables the texts use, each once, in order of appearance."""
    found: dict[str, None] = {}
    for text in texts:
        for match in VARIABLE.finditer(text or ""):
            found.setdefault(match.group(1), None)
    return list(found)


def recipient_values(recipient: Mapping[str, str], *, my_name: str, my_email: str) -> dict[str, str]:
    """What each variable is for one recipient ({"name": ..., "email": ...}) and the sender."""
    name = (recipient.get("name") or "").strip()
    parts = name.split()
    return {
        "first_name": parts[0] if parts else "",
        "last_name": parts[-1] if len(parts) > 1 else "",
        "name": name,
        "email": recipient.get("email", ""),
        "my_name": my_name,
        "my_email": my_email,
        "today": formats.date_format(timezone.localdate(), "DATE_FORMAT"),
    }


def variables_fill(text: str, values: Mapping[str, str], *, html: bool = False) -> str:
    """``text`` with its variables replaced by ``values`` (escaped for rich text); VariableError otherwise."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise VariableError(_unknown(name))
        if not values[name]:
            raise VariableError(
                _("{{ %(variable)s }} has no value for %(email)s.")
                % {"variable": name, "email": values.get("email") or _("this recipient")}
            )
        return escape(values[name]) if html else values[name]

    return VARIABLE.sub(value, text or "")


def _unknown(name: str) -> str:
    return _("{{ %(variable)s }} is not a variable Mailhub knows. Use one of: %(known)s.") % {
        "variable": name,
        "known": ", ".join(KNOWN),
    }


def outgoing_values(outgoing: OutgoingMessage) -> dict[str, str]:
    """The variables' values for ``outgoing``: its first To recipient and its From."""
    recipient = (outgoing.to or [{}])[0]
    account = outgoing.account
    my_name = outgoing.from_name if outgoing.from_alias else account.display_name
    values = recipient_values(recipient, my_name=my_name or "", my_email=outgoing.from_alias or account.email)
    return {**values, **(outgoing.variables or {})}  # a batch recipient's own columns


def outgoing_variable_problems(outgoing: OutgoingMessage) -> list[str]:
    """Why ``outgoing`` cannot be filled (empty when it can, or when it fills no variables)."""
    if not outgoing.fills_variables:
        return []
    texts = (outgoing.subject, outgoing.body_text, outgoing.body_html)
    if variables_in(*texts) and not outgoing.to:
        return [_("Add a recipient in To: the template's variables are filled from it.")]
    values = outgoing_values(outgoing)
    problems: list[str] = []
    for text in texts:
        try:
            variables_fill(text, values)
        except VariableError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    return problems


# --- Templates ------------------------------------------------------------------------------------


def templates_for(*, user) -> QuerySet[MessageTemplate]:
    """The user's own templates and the shared ones."""
    return MessageTemplate.objects.filter(Q(owner=user) | Q(shared=True))


def templates_editable_by(*, user) -> QuerySet[MessageTemplate]:
    """The user's own; shared ones too for users who may share."""
    if user.has_perm(SHARE_PERMISSION):
        return templates_for(user=user)
    return MessageTemplate.objects.filter(owner=user, shared=False)


@transaction.atomic
def template_apply(*, draft: OutgoingMessage, template: MessageTemplate) -> OutgoingMessage:
    """Start ``draft`` from ``template``: its subject, its text above what is written (a quote stays below),
    its files; the variables are filled when the message is sent."""
    draft.subject = template.subject or draft.subject
    written_html = draft.body_html or (linebreaks(draft.body_text, autoescape=True) if draft.body_text.strip() else "")
    draft.body_text = template.body_text + ("\n" + draft.body_text if draft.body_text.strip() else "")
    if template.body_html:  # a rich template makes the draft rich, what was written kept below it
        draft.body_html = template.body_html + written_html
    elif draft.body_html:  # a rich-text draft keeps its formatting below the template's paragraphs
        draft.body_html = linebreaks(template.body_text, autoescape=True) + draft.body_html
    draft.fills_variables = True
    draft.save()
    OutgoingAttachment.objects.bulk_create(
        OutgoingAttachment(outgoing=draft, **a.copy_fields()) for a in template.attachments.all()
    )
    return draft


@transaction.atomic
def template_attachments_add(*, template: MessageTemplate, files: Iterable) -> None:
    for upload in files:
        TemplateAttachment.objects.create(template=template, **upload_fields(upload))
