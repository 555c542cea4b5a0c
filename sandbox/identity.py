"""What the Google and Microsoft identity stand-ins share: clients, users, codes, consent, controls.

Each provider is a WSGI app (``__call__``) plus a thread-safe Python API for tests:
``register_client``, ``add_user``, ``fail_token_endpoint``, ``hold_token_endpoint``, ``revoke_user``,
``expire_access_tokens``, ``expire_codes``, ``issued_tokens``, ``issued_codes``, ``reset``,
and ``consent(authorization_url, ...)`` which clicks Allow/Deny over real HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.tokens import IssuedToken, TokenRegistry

StartResponse = Callable[..., Any]

_STATUS_TEXT = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --- HTTP plumbing -----------------------------------------------------------------------------


class Request:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.path: str = environ.get("PATH_INFO", "") or "/"
        self.query_string: str = environ.get("QUERY_STRING", "")
        self.query: dict[str, str] = dict(parse_qsl(self.query_string, keep_blank_values=True))
        self.form: dict[str, str] = {}
        if self.method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") or not environ.get(
                "CONTENT_TYPE"
            ):
                self.form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def header(self, name: str) -> str:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"), "")

    @property
    def params(self) -> dict[str, str]:
        """Query parameters overlaid by form fields (the consent form posts back to the query URL)."""
        return {**self.query, **self.form}

    def bearer_token(self) -> str:
        auth = self.header("Authorization")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return ""

    def basic_auth(self) -> tuple[str, str] | None:
        auth = self.header("Authorization")
        if auth[:6].lower() != "basic ":
            return None
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
        except ValueError:
            return None
        user, _, password = decoded.partition(":")
        # RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
        return unquote_plus(user), unquote_plus(password)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, start_response: StartResponse) -> Iterable[bytes]:
        start_response(f"{self.status} {_STATUS_TEXT.get(self.status, 'Status')}", self.headers)
        return [self.body]


def json_response(payload: dict[str, Any], status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(
        status,
        json.dumps(payload).encode(),
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"),
            ("Pragma", "no-cache"),
            *headers,
        ],
    )


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), [("Content-Type", "text/html; charset=utf-8")])


def redirect_response(location: str) -> Response:
    return Response(302, b"", [("Location", location)])


def add_query(url: str, params: dict[str, str], *, fragment: bool = False) -> str:
    params = {k: v for k, v in params.items() if v is not None}
    if fragment:
        return f"{url.split('#')[0]}#{urlencode(params)}"
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode(params)}"


# --- Keys, clients, users, codes ---------------------------------------------------------------


class SigningKey:
    """An RS256 key for id_tokens, published as a JWKS and as Google's kid -> PEM map."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(10)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] | None  # None: any redirect URI is accepted at authorize
    name: str

    def accepts(self, redirect_uri: str) -> bool:
        return self.redirect_uris is None or redirect_uri in self.redirect_uris


@dataclass
class User:
    email: str
    name: str
    has_mailbox: bool = True
    tenant_id: str = ""

    @property
    def stable_id(self) -> str:
        return hashlib.sha256(self.email.lower().encode()).hexdigest()


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    email: str
    expires_at: float
    code_challenge: str = ""
    code_challenge_method: str = ""
    nonce: str = ""
    params: dict[str, str] = field(default_factory=dict)  # the authorize request, for provider quirks
    tenant: str = ""
    used: bool = False

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


@dataclass
class Failure:
    status: int
    error: str
    description: str
    retry_after: int | None = None


@dataclass
class TokenHold:
    """The next token request, held (for races): ``arrived`` is set once it waits; ``release()`` lets it answer."""

    timeout: float
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()

    def wait(self) -> None:
        self.arrived.set()
        self.released.wait(self.timeout)  # bounded: a test that forgets to release still ends


class OAuthError(Exception):
    """A token-endpoint error; ``kind`` picks the provider's wording (see ``_error_text``)."""

    def __init__(self, status: int, error: str, kind: str, detail: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.kind, self.detail = status, error, kind, detail


def pkce_matches(*, verifier: str, challenge: str, method: str) -> bool:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    else:
        computed = verifier
    return hmac.compare_digest(computed, challenge)


# --- The shared identity provider ---------------------------------------------------------------


class IdentityProvider:
    provider: ClassVar[str] = ""
    title: ClassVar[str] = ""
    default_email: ClassVar[str] = "sandbox.user@example.com"
    scope_descriptions: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        *,
        tokens: TokenRegistry,
        signing_key: SigningKey | None = None,
        access_token_lifetime: float = 3600,
        refresh_token_lifetime: float | None = None,
        code_lifetime: float = 60,
    ) -> None:
        self.tokens = tokens
        self.signing_key = signing_key or SigningKey()
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.code_lifetime = code_lifetime
        self.base_url = ""  # set by the server once it knows its port
        self.sign_in_url = ""  # where browsers sign in, if not at base_url (see MicrosoftIdentity.sign_in_app)
        self.ca_path: str | None = None  # for consent() over https
        self.token_endpoint_calls = 0
        self._lock = threading.RLock()
        self._clients: dict[str, Client] = {}
        self._users: dict[str, User] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._failures: deque[Failure] = deque()
        self._hold: TokenHold | None = None

    # -- test and demo controls (thread-safe) --

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Iterable[str] | None = None,
        *,
        name: str | None = None,
    ) -> Client:
        client = Client(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=None if redirect_uris is None else tuple(redirect_uris),
            name=name or "Mailhub",
        )
        with self._lock:
            self._clients[client_id] = client
        return client

    def add_user(self, email: str, *, name: str | None = None, has_mailbox: bool = True, tenant_id: str = "") -> User:
        user = User(email=email, name=name or _name_from_email(email), has_mailbox=has_mailbox, tenant_id=tenant_id)
        with self._lock:
            self._users[email.lower()] = user
        return user

    def user(self, email: str) -> User:
        """The user with ``email``, created on first sight (the consent page accepts any address)."""
        with self._lock:
            found = self._users.get(email.lower())
        return found or self.add_user(email)

    def fail_token_endpoint(
        self,
        times: int = 1,
        *,
        status: int | None = None,
        error: str | None = None,
        description: str = "",
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` token requests fail: 503 by default, or ``error`` (400) e.g. invalid_grant."""
        if status is None:
            status = 400 if error else 503
        if error is None:
            error = "server_error" if status >= 500 else "invalid_request"
        with self._lock:
            for _ in range(times):
                self._failures.append(Failure(status, error, description, retry_after))

    def hold_token_endpoint(self, *, timeout: float = 30) -> TokenHold:
        """Hold the next token request until ``release()`` (at most ``timeout`` seconds), e.g. to race two refreshes."""
        hold = TokenHold(timeout=timeout)
        with self._lock:
            self._hold = hold
        return hold

    def revoke_user(self, email: str) -> int:
        """Revoke all of ``email``'s tokens with this provider (the user removed the app's access)."""
        return self.tokens.revoke_user(email, provider=self.provider)

    def expire_access_tokens(self, email: str) -> None:
        for token in self.tokens.issued(provider=self.provider, email=email):
            if token.kind == "access":
                token.expires_at = time.time() - 1

    def expire_refresh_tokens(self, email: str) -> None:
        for token in self.tokens.issued(provider=self.provider, email=email):
            if token.kind == "refresh":
                token.expires_at = time.time() - 1

    def expire_codes(self) -> None:
        with self._lock:
            for code in self._codes.values():
                code.expires_at = time.time() - 1

    def issued_tokens(self, *, email: str | None = None, kind: str | None = None) -> list[IssuedToken]:
        return [t for t in self.tokens.issued(provider=self.provider, email=email) if kind is None or t.kind == kind]

    def issued_codes(self, *, email: str | None = None) -> list[AuthorizationCode]:
        with self._lock:
            return [c for c in self._codes.values() if email is None or c.email.lower() == email.lower()]

    def reset_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def reset(self) -> None:
        """Forget failures, codes and issued tokens; registered clients and users stay."""
        with self._lock:
            self._failures.clear()
            self._codes.clear()
            self.token_endpoint_calls = 0
            if self._hold is not None:
                self._hold.release()
            self._hold = None
        self.tokens.clear(provider=self.provider)

    def consent(self, authorization_url: str, *, email: str | None = None, allow: bool = True) -> str:
        """Answer the consent page over HTTP as a user would; returns the redirect (Location) URL."""
        session = requests.Session()
        session.trust_env = False
        data = {"decision": "allow" if allow else "deny"}
        if email:
            data["email"] = email
        response = session.post(
            authorization_url, data=data, allow_redirects=False, verify=self.ca_path or True, timeout=10
        )
        if response.status_code != 302:
            raise RuntimeError(f"consent page answered {response.status_code}: {response.text[:300]}")
        return response.headers["Location"]

    # -- provider hooks --

    def _scope_is_known(self, scope: str) -> bool:
        raise NotImplementedError

    def _error_body(self, error: str, description: str, code: int | None) -> dict[str, Any]:
        raise NotImplementedError

    def _error_text(self, kind: str, detail: str) -> tuple[str, int | None]:
        raise NotImplementedError

    def _redirect_extras(self, code: AuthorizationCode, user: User) -> dict[str, str]:
        return {}

    def _grant_response(self, client: Client, user: User, code: AuthorizationCode) -> dict[str, Any]:
        raise NotImplementedError

    def _refresh_response(self, client: Client, refresh: IssuedToken, params: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    # -- authorize --

    def _authorize(self, request: Request, *, tenant: str = "") -> Response:
        params = request.params
        with self._lock:
            client = self._clients.get(params.get("client_id", ""))
        if client is None:
            return self._error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri or not client.accepts(redirect_uri):
            return self._error_page(
                400,
                "redirect_uri_mismatch",
                "The redirect URI in the request does not match the ones authorized for the OAuth client.",
            )
        state = params.get("state")
        response_mode = params.get("response_mode", "query")

        def fail(error: str, description: str) -> Response:
            return self._redirect(
                redirect_uri, {"error": error, "error_description": description, "state": state}, response_mode
            )

        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "Only response_type=code is supported.")
        scopes = tuple(params.get("scope", "").split())
        unknown = [s for s in scopes if not self._scope_is_known(s)]
        if not scopes or unknown:
            return fail("invalid_scope", f"Invalid scope: {' '.join(unknown) or '(none)'}")
        method = params.get("code_challenge_method", "plain" if params.get("code_challenge") else "")
        if method not in ("", "S256", "plain"):
            return fail("invalid_request", "Unsupported code_challenge_method.")

        if request.method != "POST":
            email = params.get("login_hint") or self.default_email
            return html_response(self._consent_page(client, scopes, email, request))
        if params.get("decision") != "allow":
            return fail("access_denied", self._denied_description())

        user = self.user(params.get("email") or params.get("login_hint") or self.default_email)
        code = AuthorizationCode(
            code=self._new_code(),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            email=user.email,
            expires_at=time.time() + self.code_lifetime,
            code_challenge=params.get("code_challenge", ""),
            code_challenge_method=method,
            nonce=params.get("nonce", ""),
            params={k: v for k, v in request.query.items()},
            tenant=tenant,
        )
        with self._lock:
            self._codes[code.code] = code
        return self._redirect(
            redirect_uri, {"code": code.code, "state": state, **self._redirect_extras(code, user)}, response_mode
        )

    def _denied_description(self) -> str:
        return "The user denied access."

    def _new_code(self) -> str:
        return secrets.token_urlsafe(32)

    def _redirect(self, redirect_uri: str, params: dict[str, Any], response_mode: str) -> Response:
        params = {k: v for k, v in params.items() if v is not None}
        if response_mode == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(str(v))}">'
                for k, v in params.items()
            )
            return html_response(
                f'<!doctype html><html><body onload="document.forms[0].submit()">'
                f'<form method="post" action="{html.escape(redirect_uri)}">{inputs}'
                f'<noscript><button type="submit">Continue</button></noscript></form></body></html>'
            )
        return redirect_response(add_query(redirect_uri, params, fragment=response_mode == "fragment"))

    # -- token --

    def _token(self, request: Request, *, tenant: str = "") -> Response:
        if request.method != "POST":
            return self._oauth_error(OAuthError(405, "invalid_request", "method"))
        with self._lock:
            self.token_endpoint_calls += 1
            failure = self._failures.popleft() if self._failures else None
            hold, self._hold = self._hold, None
        if hold is not None:
            hold.wait()
        if failure is not None:
            return self._injected_failure(failure)
        try:
            client = self._authenticate_client(request)
            grant_type = request.form.get("grant_type", "")
            if grant_type == "authorization_code":
                payload = self._exchange_code(client, request.form, tenant=tenant)
            elif grant_type == "refresh_token":
                payload = self._refresh(client, request.form)
            else:
                raise OAuthError(400, "unsupported_grant_type", "grant_type", grant_type)
        except OAuthError as exc:
            return self._oauth_error(exc)
        return json_response(payload)

    def _injected_failure(self, failure: Failure) -> Response:
        headers = [("Retry-After", str(failure.retry_after))] if failure.retry_after is not None else []
        description = failure.description or ("Backend Error" if failure.status >= 500 else "Injected failure")
        return json_response(self._error_body(failure.error, description, None), failure.status, headers)

    def _oauth_error(self, exc: OAuthError) -> Response:
        description, code = self._error_text(exc.kind, exc.detail)
        headers = [("WWW-Authenticate", 'Basic realm="sandbox"')] if exc.status == 401 else []
        return json_response(self._error_body(exc.error, description, code), exc.status, headers)

    def _authenticate_client(self, request: Request) -> Client:
        basic = request.basic_auth()
        if basic is not None:
            client_id, secret = basic
            if request.form.get("client_id", client_id) != client_id:
                raise OAuthError(400, "invalid_request", "client_id_mismatch")
        else:
            client_id, secret = request.form.get("client_id", ""), request.form.get("client_secret", "")
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "client_not_found", client_id)
        if not secret:
            raise OAuthError(401, "invalid_client", "secret_missing")
        if not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
            raise OAuthError(401, "invalid_client", "secret_wrong")
        return client

    def _exchange_code(self, client: Client, form: dict[str, str], *, tenant: str) -> dict[str, Any]:
        with self._lock:
            code = self._codes.get(form.get("code", ""))
            if code is None or code.client_id != client.client_id:
                raise OAuthError(400, "invalid_grant", "code_invalid")
            if code.used:
                raise OAuthError(400, "invalid_grant", "code_used")
            if code.expired:
                raise OAuthError(400, "invalid_grant", "code_expired")
            if form.get("redirect_uri", "") != code.redirect_uri:
                raise OAuthError(400, *self._redirect_mismatch_error())
            if code.code_challenge:
                verifier = form.get("code_verifier", "")
                if not verifier:
                    raise OAuthError(400, "invalid_grant", "verifier_missing")
                if not pkce_matches(
                    verifier=verifier, challenge=code.code_challenge, method=code.code_challenge_method
                ):
                    raise OAuthError(400, "invalid_grant", "verifier_wrong")
            code.used = True
        return self._grant_response(client, self.user(code.email), code)

    def _redirect_mismatch_error(self) -> tuple[str, str]:
        return "invalid_grant", "redirect_mismatch"

    def _refresh(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        value = form.get("refresh_token", "")
        with self._lock:
            token = self.tokens.get(value)
            if token is None or token.kind != "refresh" or token.provider != self.provider:
                raise OAuthError(400, "invalid_grant", "refresh_unknown")
            if token.client_id != client.client_id:
                raise OAuthError(400, "invalid_grant", "refresh_client")
            if token.revoked:
                raise OAuthError(400, "invalid_grant", "refresh_revoked", value)
            if not token.is_valid:
                raise OAuthError(400, "invalid_grant", "refresh_expired")
            return self._refresh_response(client, token, form)

    def _issue(self, kind: str, *, client: Client, user: User, scopes: tuple[str, ...], grant: str) -> IssuedToken:
        lifetime = self.access_token_lifetime if kind == "access" else self.refresh_token_lifetime
        return self.tokens.issue(
            kind=kind,
            provider=self.provider,
            client_id=client.client_id,
            email=user.email,
            scopes=scopes,
            lifetime=lifetime,
            grant=grant,
        )

    # -- pages --

    def _consent_page(self, client: Client, scopes: tuple[str, ...], email: str, request: Request) -> str:
        action = request.path + ("?" + request.query_string if request.query_string else "")
        items = "".join(
            f'<li><span class="scope">{html.escape(self.scope_descriptions.get(s, s))}</span>'
            f" <code>{html.escape(s)}</code></li>"
            for s in scopes
        )
        return _PAGE.format(
            title=html.escape(f"Sign in - {self.title} (sandbox)"),
            body=(
                f"<h1>{html.escape(self.title)} <small>sandbox</small></h1>"
                f'<p id="app-name"><strong>{html.escape(client.name)}</strong> wants to access your account</p>'
                f'<p class="client">Client ID: <code id="client-id">{html.escape(client.client_id)}</code></p>'
                f'<form method="post" action="{html.escape(action)}" id="consent-form">'
                f'<label for="email">Account</label>'
                f'<input type="email" id="email" name="email" value="{html.escape(email)}" required>'
                f'<p>This will allow {html.escape(client.name)} to:</p><ul id="scopes">{items}</ul>'
                f'<div class="buttons">'
                f'<button type="submit" id="deny" name="decision" value="deny" formnovalidate>Deny</button>'
                f'<button type="submit" id="allow" name="decision" value="allow">Allow</button>'
                f"</div></form>"
            ),
        )

    def _error_page(self, status: int, error: str, description: str) -> Response:
        return html_response(
            _PAGE.format(
                title=html.escape(f"Error - {self.title} (sandbox)"),
                body=(
                    f"<h1>{html.escape(self.title)} <small>sandbox</small></h1>"
                    f'<p id="error">Error {status}: <code>{html.escape(error)}</code></p>'
                    f'<p id="error-description">{html.escape(description)}</p>'
                ),
            ),
            status,
        )


def _name_from_email(email: str) -> str:
    local = email.split("@")[0]
    return " ".join(part.capitalize() for part in local.replace("_", ".").split(".") if part) or email


def b64url_json(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 30rem; margin: 3rem auto; padding: 0 1rem; color: #202124; }}
h1 small {{ font-size: .5em; color: #5f6368; font-weight: normal; }}
label {{ display: block; font-weight: 600; margin-top: 1rem; }}
input {{ width: 100%; padding: .5rem; font-size: 1rem; box-sizing: border-box; }}
ul {{ padding-left: 1.2rem; }} li {{ margin: .3rem 0; }} code {{ font-size: .8em; color: #5f6368; }}
.buttons {{ display: flex; justify-content: flex-end; gap: .5rem; margin-top: 1.5rem; }}
button {{ padding: .5rem 1.4rem; font-size: 1rem; border-radius: 4px; border: 1px solid #dadce0; background: #fff; }}
#allow {{ background: #1a73e8; color: #fff; border-color: #1a73e8; }}
</style></head><body>{body}</body></html>
"""
