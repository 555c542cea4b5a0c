"""Content-Security-Policy on every page, checked in Debian's Chromium, and the compose editor's paste guard.

Each main page is loaded (as a user, a mail admin with the "read all mail" right, and signed out) and the test
fails on any CSP violation: the browser's ``securitypolicyviolation`` event in every frame and its console
report are both collected. A control injects an inline script to prove the detector is not blind.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from mailbox.models import OutgoingMessage
from providers.models import ProviderApp
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.effectiveDirective + " blocked " + (e.blockedURI || "inline") + " on " +
                              e.documentURI + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


class CspWatch:
    """Collects CSP violations (event in every frame, console reports) and requests for non-loopback hosts."""

    def __init__(self, page) -> None:
        self.page = page
        self.console: list[str] = []
        self.remote: list[str] = []
        page.context.add_init_script(WATCH)
        page.on("console", self._console)
        page.context.route("**/*", self._route)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.console.append(message.text)

    def _route(self, route) -> None:
        if urlsplit(route.request.url).hostname not in LOOPBACK:
            self.remote.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def violations(self) -> list[str]:
        found = list(self.console)
        for frame in self.page.frames:
            if not frame.is_detached():
                found += frame.evaluate("window.__cspViolations || []")
        return found

    def visit(self, url: str) -> list[str]:
        self.console.clear()
        self.page.goto(url)
        self.page.wait_for_load_state("networkidle")
        for frame in self.page.frames[1:]:
            frame.wait_for_load_state("load")
        return self.violations()


def wait_for(page, predicate, timeout: float = 10.0):
    """Poll ``predicate`` from Python (Playwright's wait_for_function evaluates a string: the CSP forbids it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        page.wait_for_timeout(100)
    raise AssertionError("condition not met in time")


def signed_in(page, live_server, user) -> None:
    client = Client()
    client.force_login(user)
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}
    page.context.add_cookies([cookie])


def test_every_main_page_loads_without_a_csp_violation(page, live_server, alice, admin_user, ui_mail):
    draft = OutgoingMessage.objects.create(
        account=ui_mail.alice_gmail, subject="Styled draft", to=[{"name": "", "email": "carol@example.org"}],
        body_html='<p style="color:red">Hello <img src="https://tracker.example.net/p.gif"> <b>there</b></p>',
    )  # fmt: skip
    ProviderApp.objects.update_or_create(
        provider="google", defaults={"client_id": "g.apps", "client_secret": "s", "enabled": True}
    )
    admin_user.user_permissions.add(Permission.objects.get(codename="read_all_mail"))
    watch = CspWatch(page)
    base = live_server.url
    pages = {
        "sign in": "/login/",
    }
    alice_pages = {
        "inbox": "/",
        "folder": reverse("mailbox:folder", args=[ui_mail.folders[ui_mail.alice_gmail.email]["INBOX"].id]),
        "search": "/search/?q=report",
        "thread (plain)": reverse("mailbox:thread", args=[ui_mail.plain.thread_id]),
        "thread (html)": reverse("mailbox:thread", args=[ui_mail.html.thread_id]),
        "thread (images)": reverse("mailbox:thread", args=[ui_mail.html.thread_id]) + f"?images={ui_mail.html.id}",
        "compose": "/compose/",
        "draft (html)": reverse("mailbox:draft", args=[draft.id]),
        "drafts": "/drafts/",
        "outbox": "/outbox/",
        "mail accounts": "/accounts/",
        "who read my mail": "/access-log/",
    }
    admin_pages = {
        "mail settings": "/admin/settings/mail/",
        "admin index": "/admin/",
        "admin messages": "/admin/mailbox/message/",
        "admin message": f"/admin/mailbox/message/{ui_mail.bob_message.id}/change/",
        "admin access log": "/admin/mailbox/mailaccesslog/",
        "admin users": "/admin/auth/user/",
        "admin user": f"/admin/auth/user/{alice.id}/change/",
        "admin group add": "/admin/auth/group/add/",
    }
    failures = {}
    for name, path in pages.items():
        failures[name] = watch.visit(base + path)
    signed_in(page, live_server, alice)
    for name, path in alice_pages.items():
        failures[name] = watch.visit(base + path)
    screenshot(page, "csp-last-alice-page")
    page.context.clear_cookies()
    signed_in(page, live_server, admin_user)
    for name, path in admin_pages.items():
        failures[name] = watch.visit(base + path)
    assert {name: found for name, found in failures.items() if found} == {}
    # The draft's remote image was never requested (nor blocked: it never reached the editor). The only remote
    # request is the tracking pixel on the page where the user asked to show images.
    assert [url for url in watch.remote if "/p.gif" in url] == []

    # Control: an inline script is a violation the watcher sees.
    watch.visit(base + "/accounts/")
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = '1'; document.body.append(s); }")
    assert any("script-src" in v for v in watch.violations())


def test_every_page_sends_the_policy(client, alice, ui_mail):
    client.force_login(alice)
    for path in ["/", "/compose/", "/accounts/", reverse("mailbox:thread", args=[ui_mail.html.thread_id])]:
        policy = client.get(path)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    # "Connect mailbox" posts a form that redirects to the provider: browsers check that redirect against it.
    assert "form-action 'self' https://accounts.google.com https://login.microsoftonline.com;" in policy
    body = client.get(reverse("mailbox:message_body", args=[ui_mail.html.id]))
    assert body["Content-Security-Policy"].startswith("default-src 'none'")  # its own, stricter policy is kept
    assert body["X-Frame-Options"] == "SAMEORIGIN" and client.get("/")["X-Frame-Options"] == "DENY"


PASTED = """<meta charset="utf-8"><style>p{background:url(https://tracker.example.net/css.png)}</style>
<p style="color:red" onclick="alert(1)">Pasted <b>bold</b> <a href="javascript:alert(2)">bad link</a>
<a href="https://example.com/ok">good link</a></p>
<img src="https://tracker.example.net/pixel.gif" alt="pixel"><iframe src="https://tracker.example.net/frame"></iframe>
<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"><script>alert(3)</script>"""


def test_pasted_html_is_cleaned_before_it_reaches_the_editor(page, live_server, alice, ui_mail):
    watch = CspWatch(page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    signed_in(page, live_server, alice)
    watch.visit(live_server.url + "/compose/")
    page.check("input[name=body_format][value=html]")
    editor = page.locator(".prose-editor .ProseMirror")
    editor.click()
    page.keyboard.type("Before ")
    # What a browser hands the editor when HTML copied from a web page is pasted. (The paste event is built
    # here: writing this HTML to the system clipboard would itself parse it in the page and trip the CSP.)
    page.evaluate(
        """(html) => {
             const data = new DataTransfer();
             data.setData("text/html", html);
             data.setData("text/plain", "plain");
             document.querySelector(".prose-editor .ProseMirror").dispatchEvent(
               new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
           }""",
        PASTED,
    )
    wait_for(page, lambda: "good link" in editor.inner_text())
    page.wait_for_load_state("networkidle")
    shown = editor.inner_html()
    wait_for(page, lambda: "good link" in page.input_value("textarea[name=body_html]"))
    html = page.input_value("textarea[name=body_html]")  # what is saved
    assert html.startswith("<p>Before") and "<strong>bold</strong>" in html
    assert '<a href="https://example.com/ok">good link</a>' in html
    for out in (html, shown):
        for gone in ["tracker.example.net", "<iframe", "<script", "<style", "onclick", "javascript:", "p{", "color"]:
            assert gone not in out, gone
    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">' in html
    assert "bad link" in html and "bad link</a>" not in html  # the text stays, the javascript: target goes
    assert watch.violations() == [] and watch.remote == [] and dialogs == []
    screenshot(page, "compose-after-paste")
