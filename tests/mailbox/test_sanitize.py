"""The sanitiser alone, over the hostile corpus (tests/browser/hostile/) and the things that must survive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbox.sanitize import html_has_remote_images, html_sanitize, html_to_text, message_body_csp, text_render

CORPUS = sorted((Path(__file__).parent.parent / "browser" / "hostile").glob("*.html"))
FORBIDDEN_TAGS = ["script", "iframe", "frame", "object", "embed", "applet", "form", "input", "button", "textarea",
                  "select", "meta", "base", "link", "style", "svg", "math", "template", "portal", "isindex", "video",
                  "audio", "source", "picture", "title", "xmp", "noscript"]  # fmt: skip
URL_ATTR = re.compile(
    r"""\b(src|href|action|formaction|background|poster|srcset|data|ping|xlink:href)\s*=\s*["']?([^"'\s>]*)""", re.I
)


def _cid(content_id: str) -> str:
    return f"/message/1/cid/{content_id}"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_hostile_corpus_is_defused(path):
    safe = html_sanitize(html=path.read_text(), cid_url=_cid)
    html = safe.html
    for tag in FORBIDDEN_TAGS:
        assert not re.search(rf"<{tag}\b", html, re.I), f"<{tag}> survived"
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "an event handler survived"
    assert "javascript:" not in html.lower() and "vbscript:" not in html.lower()
    assert "expression(" not in html.lower() and "url(" not in html.lower() and "\\75" not in html
    for attr, value in URL_ATTR.findall(html):
        ok = value.startswith(("https://example.com", "/message/1/cid/", "mailto:", "#")) or value.startswith(
            "data:image/png;base64,"
        )
        assert ok, f"{attr}={value} survived"


def test_remote_images_blocked_until_asked():
    html = '<p>x</p><img src="https://cdn.example.net/a.png" alt="a"><img src="http://t.example/p.gif">'
    blocked = html_sanitize(html=html, cid_url=_cid)
    assert blocked.blocked_images == 2 and "cdn.example.net" not in blocked.html and 'alt="a"' in blocked.html
    shown = html_sanitize(html=html, cid_url=_cid, show_images=True)
    assert shown.blocked_images == 0 and 'src="https://cdn.example.net/a.png"' in shown.html
    assert html_has_remote_images(html) and not html_has_remote_images('<img src="cid:a@b">')


def test_cid_images_point_at_our_url():
    safe = html_sanitize(html='<img src="cid:logo@example.org"><img src="CID:<two@x>">', cid_url=_cid)
    assert 'src="/message/1/cid/logo@example.org"' in safe.html
    assert 'src="/message/1/cid/two@x"' in safe.html


def test_layout_survives():
    html = (CORPUS[0].parent / "13_tables_kept.html").read_text()
    safe = html_sanitize(html=html, cid_url=_cid).html
    for kept in ["<table", 'border="1"', 'cellpadding="4"', "<th>", 'align="right"', "<br>", "<blockquote>",
                 "color:#127a3b", 'href="https://example.com/safe"', 'target="_blank"', "noopener",
                 'src="data:image/png;base64,']:  # fmt: skip
        assert kept in safe.replace("color: #127a3b", "color:#127a3b"), kept


def test_plain_text_rendering():
    out = str(text_render("Hi <b>you</b> & co\nhttps://example.com/x?a=1&b=2\n\nwww.example.org"))
    assert "&lt;b&gt;you&lt;/b&gt; &amp; co" in out
    assert 'href="https://example.com/x?a=1&amp;b=2"' in out and 'href="http://www.example.org"' in out
    assert out.count("rel=") == 2 and "\n" in out


def test_html_to_text_for_quoting():
    assert html_to_text("<p>One</p><p>Two<br>Three</p><script>x</script>") == "One\nTwo\nThree"


def test_body_csp():
    csp = message_body_csp(origin="http://127.0.0.1:8000", show_images=False)
    assert "default-src 'none'" in csp and "script-src" not in csp and "sandbox allow-same-origin" in csp
    assert "img-src 'self' http://127.0.0.1:8000 data:" in csp
    assert "https:" in message_body_csp(origin="http://h", show_images=True)
