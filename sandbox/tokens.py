"""Tokens the sandbox identity providers have issued, shared with the APIs that check them."""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from dataclasses import dataclass, field


@dataclass
class IssuedToken:
    value: str
    kind: str  # "access" | "refresh"
    provider: str  # "google" | "microsoft"
    client_id: str
    email: str
    scopes: tuple[str, ...]
    expires_at: float | None  # epoch seconds; None never expires
    revoked: bool = False
    issued_at: float = field(default_factory=time.time)
    # The authorization (consent) the token came from: revoking one token of a grant can revoke all.
    grant: str = ""

    @property
    def is_valid(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > time.time())


class TokenRegistry:
    """Thread-safe store of issued tokens, with the controls tests need (revoke, expire, list)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, IssuedToken] = {}

    def issue(
        self,
        *,
        kind: str,
        provider: str,
        client_id: str,
        email: str,
        scopes: tuple[str, ...],
        lifetime: float | None,
        grant: str = "",
    ) -> IssuedToken:
        prefix = {"google": "ya29." if kind == "access" else "1//", "microsoft": "EwB"}.get(provider, "")
        token = IssuedToken(
            value=prefix + secrets.token_urlsafe(32),
            kind=kind,
            provider=provider,
            client_id=client_id,
            email=email,
            scopes=scopes,
            expires_at=None if lifetime is None else time.time() + lifetime,
            grant=grant,
        )
        with self._lock:
            self._tokens[token.value] = token
        return token

    def get(self, value: str) -> IssuedToken | None:
        with self._lock:
            return self._tokens.get(value)

    def valid(self, value: str, *, kind: str, provider: str) -> IssuedToken | None:
        token = self.get(value)
        if token and token.kind == kind and token.provider == provider and token.is_valid:
            return token
        return None

    def revoke(self, value: str) -> None:
        with self._lock:
            if value in self._tokens:
                self._tokens[value].revoked = True

    def revoke_grant(self, grant: str) -> int:
        """Revoke every token issued under ``grant``; returns how many were live."""
        if not grant:
            return 0
        with self._lock:
            hits = [t for t in self._tokens.values() if t.grant == grant and not t.revoked]
            for token in hits:
                token.revoked = True
        return len(hits)

    def clear(self, *, provider: str | None = None) -> None:
        """Forget issued tokens (all, or one provider's): a test's clean slate."""
        with self._lock:
            if provider is None:
                self._tokens.clear()
            else:
                self._tokens = {k: t for k, t in self._tokens.items() if t.provider != provider}

    def revoke_user(self, email: str, *, provider: str | None = None) -> int:
        """Revoke every token of ``email`` (as a user removing the app's access would)."""
        with self._lock:
            hits = [
                t for t in self._tokens.values() if t.email == email and (provider is None or t.provider == provider)
            ]
            for token in hits:
                token.revoked = True
        return len(hits)

    def expire_access_tokens(self, email: str) -> None:
        with self._lock:
            for token in self._tokens.values():
                if token.email == email and token.kind == "access":
                    token.expires_at = time.time() - 1

    def dump(self) -> list[dict]:
        """Every token as plain data (JSON-ready), so a restarted sandbox can honour what it issued."""
        with self._lock:
            return [dataclasses.asdict(token) for token in self._tokens.values()]

    def load(self, saved: list[dict]) -> None:
        with self._lock:
            for fields in saved:
                token = IssuedToken(**{**fields, "scopes": tuple(fields["scopes"])})
                self._tokens[token.value] = token

    def issued(self, *, provider: str | None = None, email: str | None = None) -> list[IssuedToken]:
        with self._lock:
            return [
                t
                for t in self._tokens.values()
                if (provider is None or t.provider == provider) and (email is None or t.email == email)
            ]
