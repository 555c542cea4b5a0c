from __future__ import annotations

import re
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.html import linebreaks
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import MailAccount
from mailbox.identities import Sender, senders_for
from mailbox.models import Folder, MessageTemplate, SendingPreferences, Signature, SignatureDefault
from mailbox.sanitize import html_to_text, html_written
from mailbox.search import SearchQuery

# Gmail's limit for one message's attachments; Outlook's is smaller (20 MB for SMTP submission is common).
ATTACHMENTS_MAX_BYTES = 25 * 1024 * 1024
#: A textarea the page turns into the rich-text editor (mailbox/static/mailbox/editor.js).
RICH_EDITOR = {
    "data-rich-editor": "",
    "data-clean-url": reverse_lazy("mailbox:compose_clean"),
    "rows": 14,
    "aria-label": _("Message"),
    "data-image-too-big": _("This picture is larger than 5 MB: attach it instead."),
}


_ADDRESS_SEPARATOR = re.compile(r"""((?:"[^"]*"|<[^>]*>|[^,;"<])*)[,;]?""")


def _address_parts(value: str) -> list[str]:
    """The addresses of a To/Cc/Bcc field as typed, split at commas or semicolons outside quotes and <>."""
    return [part.strip() for part in _ADDRESS_SEPARATOR.findall(value) if part.strip()]


def addresses_parse(value: str, *, keep_unfinished: bool = False) -> list[dict[str, str]]:
    """ "Ann <ann@x.org>, bob@y.org" -> [{"name": "Ann", "email": "ann@x.org"}, ...].

    Raises one ValidationError naming every address that is not valid, as the user typed it. With
    ``keep_unfinished`` (a draft being autosaved) an unfinished address is kept as typed instead, so the
    draft is saved and the address is refused only when the message is sent.
    """
    people, bad = [], []
    for part in _address_parts(value):
        name, email = parseaddr(part)
        try:
            validate_email(email)
        except ValidationError:
            if keep_unfinished:
                people.append({"name": "", "email": part})
            else:
                bad.append(part)
            continue
        people.append({"name": name, "email": email})
    if bad:
        message = ngettext(
            "%(addresses)s is not a valid email address.",
            "These are not valid email addresses: %(addresses)s.",
            len(bad),
        )
        raise ValidationError(message, params={"addresses": ", ".join(f"“{part}”" for part in bad)})
    return people


def header_value_check(value: str) -> str:
    """Refuse a line break in a value that becomes a mail header (it would start a header of its own)."""
    if "\r" in value or "\n" in value:
        raise ValidationError(_("Line breaks are not allowed here."), code="line_break")
    return value


def header_value_flatten(value: str) -> str:
    """A header value saved before line breaks were refused, made sendable again: each break becomes a space."""
    return " ".join(value.splitlines())


def addresses_format(people: list[dict[str, str]]) -> str:
    parts = []
    for person in people or []:
        name, email = person.get("name") or "", person.get("email") or ""
        parts.append(
            f'"{name}" <{email}>'
            if name and any(c in name for c in ',;<>"')
            else (f"{name} <{email}>" if name else email)
        )
    return ", ".join(parts)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        if not data:
            return []
        files = data if isinstance(data, list | tuple) else [data]
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


class ComposeForm(forms.Form):
    # Which mailbox sends, and from which of its addresses: "<account id>" or "<account id>/<alias>".
    account = forms.ChoiceField(
        label=_("From"),
        error_messages={
            "invalid_choice": _("This mailbox cannot send now: its provider is turned off in Mail settings.")
        },
    )
    to = forms.CharField(label=_("To"), required=False)
    cc = forms.CharField(label=_("Cc"), required=False)
    bcc = forms.CharField(label=_("Bcc"), required=False)
    subject = forms.CharField(label=_("Subject"), required=False)
    body_format = forms.ChoiceField(
        choices=[("text", _("Plain text")), ("html", _("Rich text"))],
        initial="text",
        required=False,
        widget=forms.RadioSelect,
    )
    body_text = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 14}), required=False)
    # Shown only as the rich-text editor (in plain-text mode the body_text textarea is the message).
    body_html = forms.CharField(widget=forms.Textarea(attrs={**RICH_EDITOR, "hidden": True}), required=False)
    signature = forms.ModelChoiceField(
        queryset=Signature.objects.none(), required=False, label=_("Signature"), empty_label=_("No signature")
    )
    # The metaclass moves declared fields into base_fields, so ``self.files`` stays the uploads (the stubs miss it).
    files = MultipleFileField(label=_("Attach files"), required=False)  # type: ignore[assignment]

    def __init__(
        self,
        *args,
        accounts,
        signatures=None,
        existing_attachment_bytes: int = 0,
        saving_draft: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if signatures is not None:
            cast(forms.ModelChoiceField, self.fields["signature"]).queryset = signatures
        self.senders = {sender.value: sender for sender in senders_for(accounts)}
        cast(forms.ChoiceField, self.fields["account"]).choices = [(v, str(s)) for v, s in self.senders.items()]
        self.existing_attachment_bytes = existing_attachment_bytes
        self.saving_draft = saving_draft  # unfinished addresses are kept; sending refuses them
        for name in ("to", "cc", "bcc"):
            self.fields[name].widget.attrs.update({"autocomplete": "off", "data-suggest": "1"})

    def clean_account(self) -> MailAccount:
        """The sending mailbox; the alias it sends from goes to ``from_alias`` and ``from_name``."""
        sender = self.senders[self.cleaned_data["account"]]
        self.cleaned_data["from_alias"] = sender.address if sender.alias else ""
        self.cleaned_data["from_name"] = sender.name if sender.alias else ""
        return sender.account

    def clean_to(self) -> list[dict[str, str]]:
        return addresses_parse(header_value_check(self.cleaned_data["to"]), keep_unfinished=self.saving_draft)

    def clean_cc(self) -> list[dict[str, str]]:
        return addresses_parse(header_value_check(self.cleaned_data["cc"]), keep_unfinished=self.saving_draft)

    def clean_bcc(self) -> list[dict[str, str]]:
        return addresses_parse(header_value_check(self.cleaned_data["bcc"]), keep_unfinished=self.saving_draft)

    def clean_subject(self) -> str:
        return header_value_check(self.cleaned_data["subject"])

    def clean_files(self):
        files = self.cleaned_data.get("files") or []
        total = self.existing_attachment_bytes + sum(f.size for f in files)
        if total > ATTACHMENTS_MAX_BYTES:
            raise ValidationError(_("Attachments may total at most 25 MB."))
        return files

    def require_recipients(self) -> bool:
        """For sending (a draft may be saved without recipients)."""
        if not self.is_valid():
            return False
        if not (self.cleaned_data["to"] or self.cleaned_data["cc"] or self.cleaned_data["bcc"]):
            self.add_error("to", _("Add at least one recipient."))
            return False
        return True


class BulkActionForm(forms.Form):
    ACTIONS = [
        ("read", _("Mark read")),
        ("unread", _("Mark unread")),
        ("star", _("Star")),
        ("unstar", _("Unstar")),
        ("archive", _("Archive")),
        ("trash", _("Delete")),
        ("delete_forever", _("Delete forever")),
        ("move", _("Move")),
    ]
    action = forms.ChoiceField(choices=ACTIONS)
    threads = forms.TypedMultipleChoiceField(coerce=int, choices=[])
    folder = forms.ModelChoiceField(queryset=Folder.objects.none(), required=False)
    next = forms.CharField(required=False)

    def __init__(self, *args, thread_ids: list[int], folders, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["threads"]).choices = [(i, i) for i in thread_ids]
        cast(forms.ModelChoiceField, self.fields["folder"]).queryset = folders

    def clean(self):
        data = super().clean()
        if data.get("action") == "move" and not data.get("folder"):
            self.add_error("folder", _("Choose a folder to move to."))
        return data


class SearchForm(forms.Form):
    q = forms.CharField(label=_("Search"), required=False)
    account = forms.TypedChoiceField(label=_("Account"), coerce=int, required=False, empty_value=None)
    folder = forms.TypedChoiceField(label=_("Folder"), coerce=int, required=False, empty_value=None)
    unread = forms.BooleanField(label=_("Unread"), required=False)
    attachment = forms.BooleanField(label=_("Has attachment"), required=False)
    after = forms.DateField(label=_("From date"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    before = forms.DateField(label=_("To date"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, accounts, folders, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["account"]).choices = [("", _("All accounts"))] + [
            (a.id, a.email) for a in accounts
        ]
        cast(forms.ChoiceField, self.fields["folder"]).choices = [("", _("All folders"))] + [
            (f.id, f"{f.account.email} / {f.label}") for f in folders
        ]

    def to_query(self) -> SearchQuery:
        data = self.cleaned_data
        return SearchQuery(
            text=data.get("q") or "",
            account_id=data.get("account"),
            folder_id=data.get("folder"),
            unread=bool(data.get("unread")),
            has_attachment=bool(data.get("attachment")),
            date_from=data.get("after"),
            date_to=data.get("before"),
        )


SCHEDULE_MAX_AHEAD = timedelta(days=366)
LOCAL_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")  # what <input type="datetime-local"> sends


def _local_datetime_parse(typed: str) -> datetime | None:
    for pattern in LOCAL_DATETIME_FORMATS:
        try:
            return datetime.strptime(typed, pattern)
        except ValueError:
            continue
    return None


class ScheduleForm(forms.Form):
    """When "Schedule send" sends: a date and time as the user's browser shows it, in the browser's time zone
    (sent along by the page; the server's own zone when the page could not say)."""

    send_at = forms.CharField(error_messages={"required": _("Choose when to send it.")})
    time_zone = forms.CharField(required=False)

    def clean(self) -> dict:
        data = super().clean() or {}
        typed = data.get("send_at")
        if not typed:
            return data
        naive = _local_datetime_parse(typed)
        if naive is None:
            raise ValidationError({"send_at": _("Enter a date and a time, such as 2027-01-31 08:00.")})
        try:
            zone = ZoneInfo(data.get("time_zone") or "") if data.get("time_zone") else timezone.get_current_timezone()
        except (ZoneInfoNotFoundError, ValueError):
            zone = timezone.get_current_timezone()
        when = naive.replace(tzinfo=zone)
        now = timezone.now()
        if when <= now:
            raise ValidationError({"send_at": _("That time has passed: choose a time ahead.")})
        if when > now + SCHEDULE_MAX_AHEAD:
            raise ValidationError({"send_at": _("Choose a time within a year.")})
        data["scheduled_for"] = when
        return data


class SendingPreferencesForm(forms.ModelForm):
    class Meta:
        model = SendingPreferences
        fields = ["undo_send_seconds"]
        labels = {"undo_send_seconds": _("Undo send")}
        help_texts = {
            "undo_send_seconds": _("How long Send waits before the message goes, so that you can take it back.")
        }


class DisplayNamesForm(forms.Form):
    """The name on each of the user's mailboxes (what recipients see beside the address)."""

    def __init__(self, *args, accounts, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.accounts = list(accounts)
        for account in self.accounts:
            self.fields[f"name_{account.pk}"] = forms.CharField(
                label=account.email, required=False, max_length=255, initial=account.display_name
            )

    def clean(self) -> dict:
        data = super().clean() or {}
        for account in self.accounts:
            data[f"name_{account.pk}"] = header_value_check(data.get(f"name_{account.pk}", ""))
        return data

    def names(self) -> list[tuple[MailAccount, str]]:
        return [(account, self.cleaned_data[f"name_{account.pk}"]) for account in self.accounts]


def rich_text_clean(html: str) -> tuple[str, str]:
    """What a rich-text editor sent, as stored: the sanitised HTML and its plain-text twin (for plain mail)."""
    clean = html_written(html=html) if html.strip() else ""
    return clean, html_to_text(clean).strip()


def _rich_initial(form: forms.ModelForm, *, html_field: str, text: str) -> None:
    """A record written as plain text (before rich text) opens in the editor as its lines."""
    if form.instance.pk and not getattr(form.instance, html_field) and text:
        form.initial[html_field] = linebreaks(text, autoescape=True)


class SignatureForm(forms.ModelForm):
    class Meta:
        model = Signature
        fields = ["name", "html"]
        labels = {"name": _("Name"), "html": _("Signature")}
        widgets = {"html": forms.Textarea(attrs={**RICH_EDITOR, "rows": 4, "aria-label": _("Signature")})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _rich_initial(self, html_field="html", text=self.instance.text)
        self.fields["html"].required = True

    def clean_html(self) -> str:
        html, text = rich_text_clean(self.cleaned_data["html"])
        if not text:
            raise ValidationError(_("Write the signature."))
        self.instance.text = text
        return html


class SignatureDefaultsForm(forms.Form):
    """For each From: the signature new mail starts with, and the one replies and forwards start with."""

    def __init__(self, *args, senders, signatures, defaults: dict[tuple[int, str], SignatureDefault], **kwargs):
        super().__init__(*args, **kwargs)
        self.senders = list(senders)
        for sender in self.senders:
            default = defaults.get(_sender_key(sender))
            for kind, label in (("new", _("New mail")), ("replies", _("Replies and forwards"))):
                self.fields[f"{kind}_{sender.value}"] = forms.ModelChoiceField(
                    queryset=signatures,
                    required=False,
                    label=label,
                    empty_label=_("No signature"),
                    initial=getattr(default, f"for_{kind}_id", None),
                )

    def rows(self) -> list[tuple[Sender, forms.BoundField, forms.BoundField]]:
        return [(s, self[f"new_{s.value}"], self[f"replies_{s.value}"]) for s in self.senders]

    def chosen(self) -> list[tuple[Sender, Signature | None, Signature | None]]:
        data = self.cleaned_data
        return [(s, data[f"new_{s.value}"], data[f"replies_{s.value}"]) for s in self.senders]


def _sender_key(sender: Sender) -> tuple[int, str]:
    return sender.account.pk, sender.address if sender.alias else ""


class TemplateForm(forms.ModelForm):
    files = MultipleFileField(label=_("Attach files"), required=False)  # type: ignore[assignment]

    class Meta:
        model = MessageTemplate
        fields = ["name", "subject", "body_html", "shared"]
        labels = {
            "name": _("Name"),
            "subject": _("Subject"),
            "body_html": _("Message"),
            "shared": _("Share with everyone"),
        }
        widgets = {"subject": forms.TextInput(), "body_html": forms.Textarea(attrs={**RICH_EDITOR, "rows": 8})}

    def __init__(self, *args, may_share: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _rich_initial(self, html_field="body_html", text=self.instance.body_text)
        if not may_share:
            del self.fields["shared"]

    def clean_body_html(self) -> str:
        html, self.instance.body_text = rich_text_clean(self.cleaned_data["body_html"])
        return html

    def clean_subject(self) -> str:
        return header_value_check(self.cleaned_data["subject"])
