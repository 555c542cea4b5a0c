"""Make untrusted mail safe to show: HTML through nh3 (for a sandboxed iframe), plain text linkified.

The sanitiser is the first wall; the iframe's sandbox and Content-Security-Policy (see
``message_body_csp``) are the second, so a bypass of one still runs no script and loads nothing remote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape

import nh3
from django.utils.html import format_html, urlize
from django.utils.safestring import SafeString

_TAGS = set(nh3.ALLOWED_TAGS) | {"font", "tfoot", "big", "address", "caption", "section"}
_COMMON_ATTRS = {"style", "align", "valign", "dir", "lang", "title", "width", "height", "bgcolor"}
_ATTRIBUTES: dict[str, set[str]] = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = _COMMON_ATTRS
_ATTRIBUTES["font"] = {"color", "face", "size"}
_ATTRIBUTES["table"] = _ATTRIBUTES.get("table", set()) | {"border", "cellpadding", "cellspacing"}
for _cell in ("td", "th"):
    _ATTRIBUTES[_cell] = _ATTRIBUTES.get(_cell, set()) | {"nowrap"}
_ATTRIBUTES["img"] = {"alt", "src", "align", "width", "height", "border"}

# Properties that only lay out or colour; none of them can fetch anything.
_STYLE_PROPERTIES = {
    "color",
    "background-color",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "line-height",
    "letter-spacing",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "vertical-align",
    "white-space",
    "word-break",
    "word-wrap",
    "overflow-wrap",
    "direction",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-collapse",
    "border-spacing",
    "border-radius",
    "width",
    "max-width",
    "min-width",
    "height",
    "max-height",
    "min-height",
    "display",
    "float",
    "clear",
    "table-layout",
    "list-style-type",
    "opacity",
}
# URL schemes nh3 lets through in href/src (anything else is dropped); the attribute filter narrows them
# further per attribute (cid: and data: only for images, and data: only for raster images).
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})
# Elements removed together with everything inside them: their text is code, metadata or a control, never
# part of the message people read (and must not leak into a reply's quote either).
DROPPED_WITH_CONTENT = frozenset(
    {
        "script", "style", "title", "head", "noscript", "template", "iframe", "object", "embed", "svg", "math",
        "form", "textarea", "select", "button",
    }
)  # fmt: skip
_SAFE_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpeg|webp);base64,[a-z0-9+/=\s]*$", re.IGNORECASE)
_DANGEROUS_CSS = re.compile(r"url\s*\(|expression\s*\(|@import|javascript:|behavior\s*:|-moz-binding", re.IGNORECASE)
_REMOTE_IMG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)
# A script URL anywhere in an attribute, even split by the whitespace and control characters browsers skip.
_SCRIPT_URL = re.compile(r"(java|vb|live)script:", re.IGNORECASE)
_SKIPPED_IN_URLS = re.compile(r"[\x00-\x20\x7f]+")
_LINK_SCHEMES = ("http:", "https:", "mailto:")


@dataclass(frozen=True)
class SafeHtml:
    html: str
    blocked_images: int  # remote images left out because the user has not asked to show them


def _style_clean(value: str) -> str | None:
    kept = [decl for decl in value.split(";") if decl.strip() and not _DANGEROUS_CSS.search(decl)]
    return "; ".join(d.strip() for d in kept) or None


def _has_script_url(value: str) -> bool:
    return bool(_SCRIPT_URL.search(_SKIPPED_IN_URLS.sub("", value)))


def _attribute_filter(cid_url: Callable[[str], str | None], show_images: bool, blocked: list[int]):
    def decide(tag: str, attr: str, value: str) -> str | None:
        if _has_script_url(value):  # in any attribute, cite and title included: nothing to gain by keeping it
            return None
        if attr == "style":
            return _style_clean(value)
        if tag == "img" and attr == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                return cid_url(value.strip()[4:].strip("<>"))
            if lowered.startswith(("http:", "https:", "//")):
                if show_images and not lowered.startswith("//"):
                    return value
                blocked.append(1)
                return None
            return value if _SAFE_DATA_IMAGE.match(value.strip()) else None
        if attr in {"href", "cite"}:
            lowered = value.strip().lower()
            if lowered.startswith(_LINK_SCHEMES):
                return value
            return value if attr == "href" and lowered.startswith("#") else None
        return value

    return decide


def html_sanitize(*, html: str, cid_url: Callable[[str], str | None], show_images: bool = False) -> SafeHtml:
    """Clean ``html`` for display; ``cid_url`` maps a Content-ID to our own URL for that inline part."""
    blocked: list[int] = []
    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute_filter(cid_url, show_images, blocked),
        url_schemes=set(URL_SCHEMES),
        filter_style_properties=_STYLE_PROPERTIES,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    return SafeHtml(html=cleaned, blocked_images=len(blocked))


def html_has_remote_images(html: str) -> bool:
    """A cheap check for the thread page's "Show images" button (the body view does the real work)."""
    return bool(_REMOTE_IMG.search(html))


def html_to_text(html: str) -> str:
    """Text of an HTML body, for quoting in a reply when a message has no text part (no style or title text)."""
    with_breaks = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</h\d>|</li>", "\n", html)
    text = nh3.clean(with_breaks, tags=set(), clean_content_tags=set(DROPPED_WITH_CONTENT))
    return re.sub(r"\n{3,}", "\n\n", unescape(text)).strip()


# What the compose editor may show: structure, emphasis, lists, tables, links and inline data: images; no
# attribute beyond a link's target and an image's source and text, so nothing styled, nothing remote.
EDITOR_TAGS = frozenset(
    {
        "p", "div", "br", "b", "strong", "i", "em", "u", "s", "strike", "sub", "sup", "ul", "ol", "li",
        "blockquote", "pre", "code", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "a", "span", "table", "thead",
        "tbody", "tfoot", "tr", "td", "th", "caption", "img",
    }
)  # fmt: skip
_EDITOR_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}, "*": set()}


def _editor_attribute(tag: str, attr: str, value: str) -> str | None:
    if _has_script_url(value):
        return None
    if attr == "src":
        return value.strip() if _SAFE_DATA_IMAGE.match(value.strip()) else None
    if attr == "href":
        return value.strip() if value.strip().lower().startswith(_LINK_SCHEMES) else None
    return value


def html_written(*, html: str) -> str:
    """HTML a user wrote (in an editor here, or in a draft read from the provider) as Mailhub stores it: sanitised
    like received mail, its images kept (they are the writer's own: data: pictures)."""
    return html_sanitize(html=html, cid_url=lambda _cid: None, show_images=True).html


def html_for_editor(*, html: str) -> str:
    """HTML pasted into (or reloaded in) a rich-text editor, reduced to what it can show without loading anything.

    The page parses only this (and the editor keeps only what its schema knows), so a pasted remote image,
    iframe, stylesheet or script never reaches the page's DOM, and no Content-Security-Policy rule is tripped.
    """
    return nh3.clean(
        html,
        tags=set(EDITOR_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=_EDITOR_ATTRIBUTES,
        attribute_filter=_editor_attribute,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel=None,
    )


def text_render(text: str) -> SafeString:
    """Plain-text mail as safe HTML: escaped, links clickable, line breaks kept (CSS pre-wrap)."""
    linked = urlize(text, nofollow=False, autoescape=True)
    linked = linked.replace("<a ", '<a target="_blank" rel="noopener noreferrer nofollow" ')
    return format_html('<div class="plain-body">{}</div>', SafeString(linked))


def message_body_csp(*, origin: str, show_images: bool) -> str:
    """The policy for the iframe document that holds one sanitised message."""
    img_src = f"'self' {origin} data:" + (" https: http:" if show_images else "")
    return "; ".join(
        [
            "default-src 'none'",
            f"img-src {img_src}",
            "style-src 'unsafe-inline'",
            "font-src 'none'",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'self'",
            "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox",
        ]
    )
