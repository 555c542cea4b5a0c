from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import formats, timezone
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
