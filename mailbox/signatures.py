"""Signatures: chosen per message in the composer, kept out of the text while it is written, added on sending.

A draft holds which signature it has (``OutgoingMessage.signature``), not its text: reopening or editing a
draft can never show it twice, and switching it is one choice. :func:`outgoing_build_raw` adds it where mail
clients put it: under the user's words and above the quoted or forwarded mail, after the RFC 3676
separator line "-- ". Each From starts with its default: one for new mail, one for replies and forwards.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils.html import escape, linebreaks

from accounts.models import MailAccount
from mailbox.identities import Sender
from mailbox.models import Signature, SignatureDefault

SEPARATOR = "-- "


def signature_default(*, account: MailAccount, from_alias: str, reply: bool) -> Signature | None:
    """The signature a message from this mailbox (and alias) starts with."""
    default = SignatureDefault.objects.filter(account=account, from_alias=from_alias).first()
    if default is None:
        return None
    return default.for_replies if reply else default.for_new


def signature_defaults(*, senders: Iterable[Sender], reply: bool) -> dict[str, int | None]:
    """For the composer: the signature each From starts with (by the From menu's value)."""
    senders = list(senders)
    defaults = {
        (d.account_id, d.from_alias): d
        for d in SignatureDefault.objects.filter(account__in={sender.account for sender in senders})
    }
    chosen = {}
    for sender in senders:
        default = defaults.get((sender.account.pk, sender.address if sender.alias else ""))
        chosen[sender.value] = (default.for_replies_id if reply else default.for_new_id) if default else None
    return chosen


def text_signed(body: str, signature: str, *, quote_marker: str) -> str:
    """``body`` with ``signature`` under the user's text: above the quoted mail when it is still there."""
    block = f"{SEPARATOR}\n{signature.strip()}"
    at = body.find(quote_marker) if quote_marker else -1
    if at < 0:
        return f"{body.rstrip()}\n\n{block}\n"
    above = body[:at].rstrip()
    return f"{above}\n\n{block}\n\n{body[at:]}" if above else f"\n\n{block}\n\n{body[at:]}"


def signature_html(signature: Signature) -> str:
    """A signature as rich text: as written in the editor, or a plain-text one's lines as a paragraph."""
    return signature.html or linebreaks(signature.text.strip(), autoescape=True)


def html_signed(body_html: str, signature_html: str, *, quote_marker: str) -> str:
    """The same for a rich-text body (``signature_html``: see :func:`signature_html`), above the quoted mail."""
    block = f'<div class="signature">{escape(SEPARATOR)}<br>{signature_html}</div>'
    at = body_html.find(escape(quote_marker)) if quote_marker else -1
    if at < 0:
        return body_html + block
    start = body_html.rfind("<p", 0, at)  # the paragraph the quote starts in
    start = start if start >= 0 else at
    return body_html[:start] + block + body_html[start:]


def signature_defaults_save(*, chosen: Iterable[tuple[Sender, Signature | None, Signature | None]]) -> None:
    """Keep, for each From, the signatures it starts with."""
    for sender, for_new, for_replies in chosen:
        SignatureDefault.objects.update_or_create(
            account=sender.account,
            from_alias=sender.address if sender.alias else "",
            defaults={"for_new": for_new, "for_replies": for_replies},
        )


def signature_defaults_of(accounts: Iterable[MailAccount]) -> dict[tuple[int, str], SignatureDefault]:
    return {(d.account_id, d.from_alias): d for d in SignatureDefault.objects.filter(account__in=list(accounts))}
