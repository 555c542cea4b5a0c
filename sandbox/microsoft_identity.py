"""Microsoft identity platform (v2.0) endpoints, on HTTPS, for msal unmodified; plus token introspection.

Paths (``<tenant>`` = common, organizations, consumers, a GUID or a domain):
``/<tenant>/v2.0/.well-known/openid-configuration``, ``/<tenant>/oauth2/v2.0/authorize`` (consent
page), ``/<tenant>/oauth2/v2.0/token``, ``/<tenant>/discovery/v2.0/keys`` (JWKS) and
``/introspect`` (RFC 7662, for Dovecot's ``passdb oauth2``; also served on plain HTTP by
:meth:`MicrosoftIdentity.introspection_app`).

Refresh tokens rotate on every use: the one just used is dead afterwards (``invalid_grant``).
A refresh token is only issued when ``offline_access`` was consented.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
import uuid
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
    b64url_json,
    json_response,
)
from sandbox.tokens import IssuedToken

SANDBOX_TENANT_ID = "5b1f7c2a-0d3e-4a8b-9c6d-2e4f6a8b0c1d"
CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
RESERVED_SCOPES = ("openid", "profile", "email", "offline_access")
OUTLOOK_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
)
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_OID_NAMESPACE = uuid.UUID("0b5bd9c4-4a6f-4cde-9a54-6a5e8f0b7e21")

# kind -> (AADSTS code, message)
_ERRORS = {
    "client_not_found": (700016, "Application with identifier '{detail}' was not found in the directory 'Sandbox'."),
    "secret_missing": (
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ),
    "secret_wrong": (
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID.",
    ),
    "client_id_mismatch": (900144, "The client_id in the body does not match the authenticated client."),
    "code_invalid": (70000, "The provided value for the 'code' parameter is not valid."),
    "code_used": (
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    ),
    "code_expired": (
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    ),
    "redirect_mismatch": (
        50011,
        "The redirect URI specified in the request does not match the redirect URI "
        "used to acquire the authorization code.",
    ),
    "verifier_missing": (
        501481,
        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
    ),
    "verifier_wrong": (
        50148,
        "The code_verifier provided does not match the code_challenge supplied in the authorization request for PKCE.",
    ),
    "refresh_unknown": (9002313, "Invalid request. Request is malformed or invalid."),
    "refresh_client": (
        70000,
        "The provided value for the 'refresh_token' parameter is not valid: it was issued to another client.",
    ),
    "refresh_rotated": (
        70000,
        "The provided value for the 'refresh_token' parameter is not valid: the refresh "
        "token was already redeemed and has been replaced by a new one.",
    ),
    "refresh_revoked": (
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is "
        "needed. The user might have changed or reset their password.",
    ),
    "refresh_expired": (700082, "The refresh token has expired due to inactivity."),
    "scope": (
        65001,
        "The user or administrator has not consented to use the application. Send an interactive "
        "authorization request for this user and resource.",
    ),
    "grant_type": (70003, "The app requested an unsupported grant type '{detail}'."),
    "method": (900561, "The endpoint only accepts POST requests."),
}


def microsoft_object_id(user: User) -> str:
    return str(uuid.uuid5(_OID_NAMESPACE, user.email.lower()))


class MicrosoftIdentity(IdentityProvider):
    provider = "microsoft"
    title = "Microsoft"
    default_email = "sandbox.user@outlook.example"
    scope_descriptions = {
        "https://outlook.office.com/IMAP.AccessAsUser.All": "Read and write access to your mailbox via IMAP",
        "https://outlook.office.com/SMTP.Send": "Send emails from your mailbox using SMTP AUTH",
        "offline_access": "Maintain access to data you have given it access to",
        "openid": "Sign you in",
        "profile": "View your basic profile",
        "email": "View your email address",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("refresh_token_lifetime", 90 * 24 * 3600)
        super().__init__(**kwargs)
        self._rotated: set[str] = set()
        self.introspection_calls = 0

    # -- controls --

    def users_without_mailbox(self) -> list[str]:
        """Addresses of Microsoft accounts that have no Exchange Online (Outlook) mailbox."""
        with self._lock:
            return sorted(u.email for u in self._users.values() if not u.has_mailbox)

    def has_mailbox(self, email: str) -> bool:
        return self.user(email).has_mailbox

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._rotated.clear()
            self.introspection_calls = 0

    # -- WSGI --

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        return self._route(request)(start_response)

    def sign_in_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """A WSGI app that serves only the consent page, for a plain-HTTP loopback server.

        The browser signs in there and so never meets the sandbox CA it does not trust; msal still talks
        HTTPS to every other endpoint. Discovery advertises it once ``sign_in_url`` is set.
        """
        request = Request(environ)
        tenant, _, rest = request.path.rstrip("/").lstrip("/").partition("/")
        if _TENANT_RE.match(tenant) and rest == "oauth2/v2.0/authorize":
            return self._authorize(request, tenant=tenant)(start_response)
        return self._not_found(request.path)(start_response)

    def introspection_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """A WSGI app that serves only ``/introspect`` (for the plain-HTTP loopback server)."""
        request = Request(environ)
        if request.path.rstrip("/") == "/introspect":
            return self._introspect(request)(start_response)
        return json_response({"error": "not_found"}, 404)(start_response)

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == "/introspect":
            return self._introspect(request)
        tenant, _, rest = path.lstrip("/").partition("/")
        if not _TENANT_RE.match(tenant):
            return self._not_found(path)
        if rest == "v2.0/.well-known/openid-configuration":
            return json_response(self.discovery(tenant))
        if rest in ("discovery/v2.0/keys", "discovery/keys"):
            return json_response(self.signing_key.jwks())
        if rest == "oauth2/v2.0/authorize":
            return self._authorize(request, tenant=tenant)
        if rest == "oauth2/v2.0/token":
            return self._token(request, tenant=tenant)
        return self._not_found(path)

    def _not_found(self, path: str) -> Response:
        return json_response(
            self._error_body("invalid_request", f"AADSTS90002: No sandbox endpoint {path}.", 90002), 404
        )

    def discovery(self, tenant: str) -> dict[str, Any]:
        base = self.base_url
        issuer_tenant = {"common": "{tenantid}", "organizations": "{tenantid}"}.get(
            tenant.lower(), self._tenant_id(tenant, None)
        )
        return {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{self.sign_in_url or base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "oid",
                "email",
            ],
            "code_challenge_methods_supported": ["plain", "S256"],
            "introspection_endpoint": f"{base}/introspect",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }

    # -- hooks --

    def _scope_is_known(self, scope: str) -> bool:
        return (
            scope in RESERVED_SCOPES
            or scope.startswith(("https://outlook.office.com/", "https://outlook.office365.com/"))
            or scope.startswith("https://graph.microsoft.com/")
        )

    def _error_body(self, error: str, description: str, code: int | None) -> dict[str, Any]:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        timestamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": error,
            "error_description": f"{description} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {timestamp}",
            "error_codes": [code] if code else [],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        }
        if code:
            body["error_uri"] = f"{self.base_url}/error?code={code}"
        return body

    def _error_text(self, kind: str, detail: str) -> tuple[str, int | None]:
        if kind == "refresh_revoked" and detail in self._rotated:
            kind = "refresh_rotated"
        code, message = _ERRORS.get(kind, (90014, "The request is invalid."))
        # ``detail`` is only ever a client id or grant type here, never a secret or a token.
        shown = detail if kind in ("client_not_found", "grant_type") else ""
        return f"AADSTS{code}: {message.format(detail=shown)}", code

    def _denied_description(self) -> str:
        return "AADSTS65004: User declined to consent to access the app."

    def _new_code(self) -> str:
        return "M.C5" + secrets.token_urlsafe(48)

    def _redirect_extras(self, code: AuthorizationCode, user: User) -> dict[str, str]:
        extras = {"session_state": str(uuid.uuid4())}
        if code.params.get("client_info") == "1":
            extras["client_info"] = self._client_info(user, code.tenant)
        return extras

    def _grant_response(self, client: Client, user: User, code: AuthorizationCode) -> dict[str, Any]:
        grant = secrets.token_hex(12)
        return self._token_payload(client, user, code.scopes, grant=grant, tenant=code.tenant, nonce=code.nonce)

    def _refresh_response(self, client: Client, refresh: IssuedToken, params: dict[str, str]) -> dict[str, Any]:
        scopes = refresh.scopes
        requested = [s for s in params.get("scope", "").split() if s not in RESERVED_SCOPES]
        if requested:
            if any(s not in refresh.scopes for s in requested):
                raise OAuthError(400, "invalid_grant", "scope")
            scopes = tuple(dict.fromkeys([*requested, *(s for s in refresh.scopes if s in RESERVED_SCOPES)]))
        # Rotation: the refresh token just presented dies now (the caller holds our lock).
        self.tokens.revoke(refresh.value)
        self._rotated.add(refresh.value)
        return self._token_payload(
            client,
            self.user(refresh.email),
            scopes,
            grant=refresh.grant,
            tenant=params.get("_tenant", ""),
            refresh_scopes=refresh.scopes,
        )

    def _token(self, request: Request, *, tenant: str = "") -> Response:
        request.form["_tenant"] = tenant
        return super()._token(request, tenant=tenant)

    # -- helpers --

    def _tenant_id(self, tenant: str, user: User | None) -> str:
        if _GUID_RE.match(tenant):
            return tenant.lower()
        if tenant.lower() == "consumers":
            return CONSUMERS_TENANT_ID
        return (user.tenant_id if user and user.tenant_id else "") or SANDBOX_TENANT_ID

    def _client_info(self, user: User, tenant: str) -> str:
        return b64url_json({"uid": microsoft_object_id(user), "utid": self._tenant_id(tenant, user)})

    def _token_payload(
        self,
        client: Client,
        user: User,
        scopes: tuple[str, ...],
        *,
        grant: str,
        tenant: str,
        nonce: str = "",
        refresh_scopes: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        # The access token carries the scopes asked for; the refresh token keeps the whole consented grant.
        access = self._issue("access", client=client, user=user, scopes=scopes, grant=grant)
        payload: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(s for s in scopes if s != "offline_access"),
            "expires_in": int(self.access_token_lifetime),
            "ext_expires_in": int(self.access_token_lifetime),
            "access_token": access.value,
        }
        if "offline_access" in scopes:
            payload["refresh_token"] = self._issue(
                "refresh", client=client, user=user, scopes=refresh_scopes or scopes, grant=grant
            ).value
        if "openid" in scopes:
            payload["id_token"] = self._id_token(client, user, tenant, nonce=nonce)
        payload["client_info"] = self._client_info(user, tenant)
        return payload

    def _id_token(self, client: Client, user: User, tenant: str, *, nonce: str = "") -> str:
        now = int(time.time())
        tid = self._tenant_id(tenant, user)
        oid = microsoft_object_id(user)
        claims: dict[str, Any] = {
            "ver": "2.0",
            "iss": f"{self.base_url}/{tid}/v2.0",
            "sub": str(uuid.uuid5(_OID_NAMESPACE, f"{client.client_id}:{oid}")).replace("-", ""),
            "aud": client.client_id,
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "name": user.name,
            "preferred_username": user.email,
            "email": user.email,
            "oid": oid,
            "tid": tid,
        }
        if nonce:
            claims["nonce"] = nonce
        return self.signing_key.sign(claims)

    def _introspect(self, request: Request) -> Response:
        """RFC 7662 introspection of Microsoft access tokens (what Dovecot checks XOAUTH2 logins against).

        Token from a ``token`` form field, a ``token`` query parameter or a Bearer header. Optional
        query flags: ``require_mailbox=1`` reports tokens of users without a mailbox as inactive;
        ``require_scope=<scope>`` reports tokens lacking that scope as inactive.
        """
        with self._lock:
            self.introspection_calls += 1
        value = request.form.get("token") or request.query.get("token") or request.bearer_token()
        token = self.tokens.valid(value, kind="access", provider=self.provider)
        if token is None:
            return json_response({"active": False})
        user = self.user(token.email)
        required_scope = request.query.get("require_scope")
        if request.query.get("require_mailbox") == "1" and not user.has_mailbox:
            return json_response({"active": False})
        if required_scope and required_scope not in token.scopes:
            return json_response({"active": False})
        return json_response(
            {
                "active": True,
                "email": user.email,
                "username": user.email,
                "scope": " ".join(token.scopes),
                "client_id": token.client_id,
                "token_type": "Bearer",
                "exp": int(token.expires_at) if token.expires_at else None,
                "iat": int(token.issued_at),
                "sub": microsoft_object_id(user),
                "mailbox": "yes" if user.has_mailbox else "no",
            }
        )
