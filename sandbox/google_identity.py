"""Google's OAuth 2.0 endpoints, on plain HTTP, for google-auth-oauthlib and google-auth unmodified.

Paths (relative to the server root, as in ``Sandbox.env()``):
``/o/oauth2/auth`` consent page, ``/token``, ``/revoke``, ``/v1/userinfo`` (also
``/oauth2/v3/userinfo``), ``/oauth2/v3/certs`` (JWKS), ``/oauth2/v1/certs`` (kid -> PEM) and
``/.well-known/openid-configuration``.

Like Google: a refresh token is issued when ``access_type=offline`` and either ``prompt`` contains
``consent`` or the user has no live grant for this client yet (a re-consent without
``prompt=consent`` gets no new refresh token). Refresh tokens do not rotate. Revoking any token
of a grant revokes the whole grant.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from sandbox.identity import (
    AuthorizationCode,
    Client,
    IdentityProvider,
    OAuthError,
    Request,
    Response,
    User,
    json_response,
)
from sandbox.tokens import IssuedToken

ISSUER = "https://accounts.google.com"
EMAIL_SCOPES = {"email", "https://www.googleapis.com/auth/userinfo.email"}
PROFILE_SCOPES = {"profile", "https://www.googleapis.com/auth/userinfo.profile"}

_ERROR_TEXT = {
    "client_not_found": "The OAuth client was not found.",
    "secret_missing": "client_secret is missing.",
    "secret_wrong": "Unauthorized",
    "client_id_mismatch": "client_id does not match the authenticated client.",
    "code_invalid": "Malformed auth code.",
    "code_used": "Bad Request",
    "code_expired": "Bad Request",
    "redirect_mismatch": "Bad Request",
    "verifier_missing": "Missing code verifier.",
    "verifier_wrong": "Invalid code verifier.",
    "refresh_unknown": "Bad Request",
    "refresh_client": "Unauthorized",
    "refresh_revoked": "Token has been expired or revoked.",
    "refresh_expired": "Token has been expired or revoked.",
    "scope": "Some requested scopes were invalid.",
    "grant_type": "Invalid grant_type.",
    "method": "Method not allowed.",
}


def google_subject(user: User) -> str:
    """A stable numeric ``sub`` like Google's (21 digits)."""
    return str(int(user.stable_id[:20], 16))[:21].rjust(21, "1")


class GoogleIdentity(IdentityProvider):
    provider = "google"
    title = "Google"
    default_email = "sandbox.user@gmail.com"
    scope_descriptions = {
        "openid": "Associate you with your personal info on Google",
        "email": "See your primary Google Account email address",
        "https://www.googleapis.com/auth/userinfo.email": "See your primary Google Account email address",
        "profile": "See your personal info, including any personal info you've made publicly available",
        "https://www.googleapis.com/auth/userinfo.profile": "See your personal info",
        "https://www.googleapis.com/auth/gmail.modify": "Read, compose, and send emails from your Gmail account",
        "https://www.googleapis.com/auth/gmail.readonly": "View your email messages and settings",
        "https://www.googleapis.com/auth/gmail.send": "Send email on your behalf",
        "https://www.googleapis.com/auth/gmail.labels": "See and edit your email labels",
        "https://mail.google.com/": "Read, compose, send, and permanently delete all your email from Gmail",
    }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        return self._route(request)(start_response)

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path in ("/o/oauth2/auth", "/o/oauth2/v2/auth"):
            return self._authorize(request)
        if path in ("/token", "/o/oauth2/token"):
            return self._token(request)
        if path in ("/revoke", "/o/oauth2/revoke"):
            return self._revoke(request)
        if path in ("/v1/userinfo", "/oauth2/v3/userinfo", "/oauth2/v2/userinfo"):
            return self._userinfo(request)
        if path == "/oauth2/v3/certs":
            return json_response(self.signing_key.jwks())
        if path == "/oauth2/v1/certs":
            return json_response({self.signing_key.kid: self.signing_key.public_pem()})
        if path == "/.well-known/openid-configuration":
            return json_response(self.discovery())
        return json_response({"error": "not_found", "error_description": f"No sandbox endpoint {path}"}, 404)

    def discovery(self) -> dict[str, Any]:
        base = self.base_url
        return {
            "issuer": ISSUER,
            "authorization_endpoint": f"{base}/o/oauth2/auth",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/v1/userinfo",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/oauth2/v3/certs",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        }

    # -- hooks --

    def _scope_is_known(self, scope: str) -> bool:
        return scope in ("openid", "email", "profile", "https://mail.google.com/") or scope.startswith(
            "https://www.googleapis.com/auth/"
        )

    def _error_body(self, error: str, description: str, code: int | None) -> dict[str, Any]:
        return {"error": error, "error_description": description}

    def _error_text(self, kind: str, detail: str) -> tuple[str, int | None]:
        return _ERROR_TEXT.get(kind, "Bad Request"), None

    def _redirect_mismatch_error(self) -> tuple[str, str]:
        return "redirect_uri_mismatch", "redirect_mismatch"

    def _denied_description(self) -> str:
        return "The user denied access."

    def _new_code(self) -> str:
        return "4/0A" + secrets.token_urlsafe(40)

    def _redirect_extras(self, code: AuthorizationCode, user: User) -> dict[str, str]:
        return {"scope": " ".join(code.scopes), "authuser": "0", "prompt": "consent"}

    def _grant_response(self, client: Client, user: User, code: AuthorizationCode) -> dict[str, Any]:
        offline = code.params.get("access_type") == "offline"
        forced = "consent" in code.params.get("prompt", "").split()
        with self._lock:
            live = [
                t
                for t in self.tokens.issued(provider=self.provider, email=user.email)
                if t.kind == "refresh" and t.client_id == client.client_id and t.is_valid
            ]
            grant = live[0].grant if live and not forced else secrets.token_hex(12)
            refresh = None
            if offline and (forced or not live):
                refresh = self._issue("refresh", client=client, user=user, scopes=code.scopes, grant=grant)
            access = self._issue("access", client=client, user=user, scopes=code.scopes, grant=grant)
        payload = self._access_payload(access)
        if refresh is not None:
            payload["refresh_token"] = refresh.value
        if "openid" in code.scopes:
            payload["id_token"] = self._id_token(client, user, code.scopes, nonce=code.nonce)
        return payload

    def _refresh_response(self, client: Client, refresh: IssuedToken, params: dict[str, str]) -> dict[str, Any]:
        scopes = refresh.scopes
        if params.get("scope"):
            requested = tuple(params["scope"].split())
            invalid = [s for s in requested if s not in refresh.scopes]
            if invalid:
                raise OAuthError(400, "invalid_scope", "scope")
            scopes = requested
        user = self.user(refresh.email)
        access = self._issue("access", client=client, user=user, scopes=scopes, grant=refresh.grant)
        payload = self._access_payload(access)
        if "openid" in scopes:
            payload["id_token"] = self._id_token(client, user, scopes)
        return payload

    # -- helpers --

    def _access_payload(self, access: IssuedToken) -> dict[str, Any]:
        return {
            "access_token": access.value,
            "expires_in": int(self.access_token_lifetime),
            "scope": " ".join(access.scopes),
            "token_type": "Bearer",
        }

    def _id_token(self, client: Client, user: User, scopes: tuple[str, ...], *, nonce: str = "") -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "azp": client.client_id,
            "aud": client.client_id,
            "sub": google_subject(user),
            "iat": now,
            "exp": now + 3600,
        }
        if EMAIL_SCOPES & set(scopes):
            claims.update(email=user.email, email_verified=True)
        if PROFILE_SCOPES & set(scopes):
            claims.update(name=user.name, given_name=user.name.split(" ")[0])
        if nonce:
            claims["nonce"] = nonce
        return self.signing_key.sign(claims)

    def _revoke(self, request: Request) -> Response:
        value = request.form.get("token") or request.query.get("token", "")
        token = self.tokens.get(value)
        if token is None or token.provider != self.provider or not token.is_valid:
            return json_response({"error": "invalid_token", "error_description": "Token expired or revoked"}, 400)
        if token.grant:
            self.tokens.revoke_grant(token.grant)
        else:
            self.tokens.revoke(value)
        return json_response({})

    def _userinfo(self, request: Request) -> Response:
        value = request.bearer_token() or request.query.get("access_token", "")
        token = self.tokens.valid(value, kind="access", provider=self.provider)
        if token is None:
            return json_response(
                {"error": "invalid_token", "error_description": "Invalid Credentials"},
                401,
                [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"')],
            )
        user = self.user(token.email)
        info: dict[str, Any] = {"sub": google_subject(user)}
        if EMAIL_SCOPES & set(token.scopes):
            info.update(email=user.email, email_verified=True)
        if PROFILE_SCOPES & set(token.scopes):
            info.update(name=user.name, given_name=user.name.split(" ")[0])
        return json_response(info)
