from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from django import template
from django.utils import formats, timezone
from django.utils.html import conditional_escape, escape
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from mailbox.forms import addresses_format

register = template.Library()


@register.filter
def mail_date(value: datetime | None) -> str:
    """Today: the time; this year: day and month; older: the full date (in the user's locale)."""
    if not value:
        return ""
    local = timezone.localtime(value)
    now = timezone.localtime()
    if local.date() == now.date():
        return formats.time_format(local, "TIME_FORMAT")
    if local.year == now.year:
        return formats.date_format(local, "MONTH_DAY_FORMAT")
    return formats.date_format(local, "SHORT_DATE_FORMAT")


@register.filter
def highlight(text: str | None, terms: Sequence[str] | None) -> str:
    """``text`` escaped, with each word that starts with one of ``terms`` (a search's words) in <mark>."""
    text = text or ""
    if not terms:
        return conditional_escape(text)
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + ")", re.I)
    parts = pattern.split(text)  # odd items are the matches
    return mark_safe(  # noqa: S308 - every piece is escaped here
        "".join(f"<mark>{escape(part)}</mark>" if i % 2 else escape(part) for i, part in enumerate(parts))
    )


@register.filter
def people(value: list[dict] | None) -> str:
    return addresses_format(value or [])


@register.filter
def names(value: list[dict] | None) -> str:
    """Recipients as a row shows them: names where known, else addresses."""
    return ", ".join(person.get("name") or person.get("email", "") for person in value or [])


@register.filter
def sender(message) -> str:
    if message.from_name and message.from_address:
        return f"{message.from_name} <{message.from_address}>"
    return message.from_address or message.from_name or _("(unknown sender)")
