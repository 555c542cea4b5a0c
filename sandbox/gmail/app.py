"""The sandbox Gmail API as a WSGI app: REST calls, `/batch`, media uploads, Google's errors.

Mount it for the paths ``/gmail/v1/``, ``/batch`` (google-api-python-client posts batches to
``<rootUrl>batch`` for Gmail's discovery document; ``/batch/gmail/v1`` is accepted too),
``/upload/gmail/v1/`` and ``/resumable/upload/gmail/v1/``. ``/gmail/v1/sandbox/...`` is an
unauthenticated control endpoint for seeding a running sandbox (see ``sandbox_seed``).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from sandbox.gmail.api import ApiRequest, route
from sandbox.gmail.discovery import method_scopes
from sandbox.gmail.mime import b64url_decode
from sandbox.gmail.store import GmailError, GmailStore, not_found, seed_labels
from sandbox.tokens import TokenRegistry

__all__ = ["GmailApp", "GmailStore", "error_body"]

MAX_BATCH = 100
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_REASON_STATUS = {"failedPrecondition": "FAILED_PRECONDITION"}
_USAGE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        if data is None:
            return cls(status, b"", list(headers or []))
        return cls(
            status, json.dumps(data).encode(), [("Content-Type", "application/json; charset=UTF-8"), *(headers or [])]
        )


def error_body(error: GmailError) -> dict:
    """Google's JSON error shape for ``error``."""
    item = {
        "message": error.message,
        "domain": "usageLimits" if error.reason in _USAGE_REASONS else "global",
        "reason": error.reason,
    }
    if error.status == 401:
        item.update(location="Authorization", locationType="header")
    return {
        "error": {
            "code": error.status,
            "message": error.message,
            "errors": [item],
            "status": _REASON_STATUS.get(error.reason) or _STATUS_NAMES.get(error.status, "UNKNOWN"),
        }
    }


def error_response(error: GmailError) -> Response:
    headers: list[tuple[str, str]] = []
    if error.retry_after is not None:
        headers.append(("Retry-After", str(max(1, math.ceil(error.retry_after)))))
    if error.status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"'))
    return Response.json(error.status, error_body(error), headers)


def _unauthorized() -> GmailError:
    return GmailError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
        reason="authError",
    )


def _quota_error(wait: float) -> GmailError:
    when = (datetime.now(UTC) + timedelta(seconds=wait)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return GmailError(
        429, f"User-rate limit exceeded.  Retry after {when}", reason="rateLimitExceeded", retry_after=wait
    )


def _concurrency_error() -> GmailError:
    return GmailError(429, "Too many concurrent requests for user.", reason="rateLimitExceeded")


# --- partial responses (`fields=`) -------------------------------------------------------------------
def parse_fields(spec: str) -> dict:
    """``"messages(id,threadId),nextPageToken"`` -> {"messages": {"id": None, ...}, ...}."""
    tree: dict = {}
    position = _parse_field_list(spec.replace(" ", ""), 0, tree)
    if position != len(spec.replace(" ", "")):
        raise GmailError(400, "Invalid field selection", reason="invalidParameter")
    return tree


def _parse_field_list(spec: str, index: int, tree: dict) -> int:
    while index < len(spec) and spec[index] != ")":
        match = re.compile(r"[A-Za-z0-9_*]+(/[A-Za-z0-9_*]+)*").match(spec, index)
        if not match:
            raise GmailError(400, "Invalid field selection", reason="invalidParameter")
        node = tree
        names = match.group().split("/")
        for name in names[:-1]:
            if node.get(name) is None:
                node[name] = {}
            node = node[name]
        index = match.end()
        if index < len(spec) and spec[index] == "(":
            child = node.get(names[-1]) or {}
            index = _parse_field_list(spec, index + 1, child)
            if index >= len(spec) or spec[index] != ")":
                raise GmailError(400, "Invalid field selection", reason="invalidParameter")
            node[names[-1]] = child
            index += 1
        else:
            node[names[-1]] = None
        if index < len(spec) and spec[index] == ",":
            index += 1
    return index


def apply_fields(value: Any, tree: dict | None) -> Any:
    if tree is None or "*" in tree:
        return value
    if isinstance(value, list):
        return [apply_fields(item, tree) for item in value]
    if isinstance(value, dict):
        return {key: apply_fields(value[key], sub) for key, sub in tree.items() if key in value}
    return value


# --- multipart bodies ---------------------------------------------------------------------------------
def _split_head(chunk: bytes) -> tuple[bytes, bytes]:
    match = re.search(rb"\r?\n\r?\n", chunk)
    if not match:
        return chunk, b""
    return chunk[: match.start()], chunk[match.end() :]


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    text = re.sub(r"\r?\n[ \t]+", " ", head.decode("latin-1"))
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _boundary(content_type: str) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return match.group(1).encode("latin-1") if match else None


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    parts = []
    for chunk in re.split(rb"(?:^|\r?\n)--" + re.escape(boundary), body)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = re.sub(rb"\A[ \t]*\r?\n", b"", chunk)
        head, content = _split_head(chunk)
        parts.append((_parse_headers(head), content))
    return parts


# --- the WSGI app ---------------------------------------------------------------------------------------
@dataclass
class _Upload:
    email: str
    path: str
    params: dict[str, list[str]]
    metadata: bytes
    data: bytearray = field(default_factory=bytearray)


class GmailApp:
    """WSGI app answering the Gmail API for the mailboxes in ``store``, authenticated by ``tokens``."""

    def __init__(self, *, tokens: TokenRegistry, store: GmailStore, check_scopes: bool = True) -> None:
        self.tokens = tokens
        self.store = store
        self.check_scopes = check_scopes
        self._uploads: dict[str, _Upload] = {}
        self._uploads_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        verb = environ.get("REQUEST_METHOD", "GET").upper()
        params = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        headers["host"] = headers.get("host") or environ.get("SERVER_NAME", "127.0.0.1")
        email = self._email(headers.get("authorization"), params) or ""
        self.store.count(email, "http_requests")
        try:
            if path in ("/batch", "/batch/gmail/v1") or path.startswith("/batch/"):
                response = self._batch(headers, body)
            elif path.startswith("/gmail/v1/sandbox/"):
                response = self._control(verb, path, body)
            elif path.startswith(("/upload/", "/resumable/upload/")):
                response = self._upload(verb, path, params, headers, body, environ)
            else:
                response = self._single(email, verb, path, params, headers, body)
        except GmailError as error:
            response = error_response(error)
        reason = HTTPStatus(response.status).phrase
        start_response(f"{response.status} {reason}", [*response.headers, ("Content-Length", str(len(response.body)))])
        return [response.body]

    def _single(
        self, email: str, verb: str, path: str, params: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Response:
        if not self.store.enter(email, 1):
            self.store.count(email, "throttled")
            return error_response(_concurrency_error())
        try:
            return self.call(verb, path, params, headers, body)
        finally:
            self.store.leave(email, 1)

    def _email(self, authorization: str | None, params: dict[str, list[str]]) -> str | None:
        value = None
        if authorization and authorization.lower().startswith("bearer "):
            value = authorization[7:].strip()
        elif params.get("access_token"):
            value = params["access_token"][-1]
        token = self.tokens.valid(value, kind="access", provider="google") if value else None
        return token.email if token else None

    # --- one API call -----------------------------------------------------------------------------------
    def call(
        self,
        verb: str,
        path: str,
        params: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        media: bytes | None = None,
    ) -> Response:
        """Serve one REST call (also each part of a batch); never raises GmailError."""
        try:
            return self._call(verb, path, params, headers, body, media)
        except GmailError as error:
            return error_response(error)

    def _call(
        self,
        verb: str,
        path: str,
        params: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        media: bytes | None,
    ) -> Response:
        match = re.fullmatch(r"/gmail/v1/users/([^/]+)/(.+)", path)
        routed = route(verb, match.group(2)) if match else None
        if match is None or routed is None:
            raise not_found()
        method, handler, args = routed
        authorization = headers.get("authorization", "")
        value = (
            authorization[7:].strip()
            if authorization.lower().startswith("bearer ")
            else (params.get("access_token") or [""])[-1]
        )
        token = self.tokens.valid(value, kind="access", provider="google") if value else None
        if token is None:
            self.store.count("", "unauthorized")
            raise _unauthorized()
        email = token.email
        self.store.count(email, method)
        user = unquote(match.group(1))
        if user != "me" and user.lower() != email.lower():
            raise GmailError(403, f"Delegation denied for {email}", reason="forbidden")
        if self.check_scopes and not set(token.scopes) & method_scopes(method):
            raise GmailError(403, "Request had insufficient authentication scopes.", reason="insufficientPermissions")
        delay = self.store.injected_delay(email, method)
        if delay:
            time.sleep(delay)  # outside the store's lock: only this request waits
        failure = self.store.injected_failure(email, method)
        if failure is not None:
            self.store.count(email, "injected_failures")
            raise failure
        box = self.store.api_mailbox(email)
        wait = self.store.charge(email, method)
        if wait is not None:
            self.store.count(email, "throttled")
            raise _quota_error(wait)
        request = ApiRequest(verb, match.group(2), params, body, headers.get("content-type", ""), media)
        with self.store.lock:
            status, data = handler(self.store, box, request, *(unquote(arg) for arg in args))
        if data is not None and params.get("fields"):
            data = apply_fields(data, parse_fields(params["fields"][-1]))
        return Response.json(status, data)

    # --- batch ------------------------------------------------------------------------------------------
    def _batch(self, headers: dict[str, str], body: bytes) -> Response:
        boundary = _boundary(headers.get("content-type", ""))
        if boundary is None:
            raise GmailError(400, "Failed to parse batch request, error: no boundary.", reason="badRequest")
        parts = split_multipart(body, boundary)
        if len(parts) > MAX_BATCH:
            raise GmailError(400, f"Too many requests in batch (max {MAX_BATCH}).", reason="badRequest")
        email = self._email(headers.get("authorization"), {}) or ""
        self.store.count(email, "batch")
        # Google runs a batch's parts in parallel: each one counts against the concurrency limit.
        allowed = self.store.enter(email, len(parts))
        try:
            return self._batch_parts(email, headers, parts, allowed)
        finally:
            self.store.leave(email, allowed)

    def _batch_parts(
        self, email: str, headers: dict[str, str], parts: list[tuple[dict[str, str], bytes]], allowed: int
    ) -> Response:
        out_boundary = "batch_" + secrets.token_urlsafe(12)
        chunks: list[bytes] = []
        for index, (part_headers, content) in enumerate(parts):
            if index < allowed:
                response = self._batch_part(headers, content)
            else:
                self.store.count(email, "throttled")
                response = error_response(_concurrency_error())
            chunk = f"--{out_boundary}\r\nContent-Type: application/http\r\n"
            content_id = part_headers.get("content-id")
            if content_id:
                chunk += f"Content-ID: <response-{content_id.strip('<>')}>\r\n"
            chunk += f"\r\nHTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}\r\n"
            chunk += "".join(f"{name}: {value}\r\n" for name, value in response.headers)
            chunk += f"Content-Length: {len(response.body)}\r\n\r\n"
            chunks.append(chunk.encode() + response.body + b"\r\n")
        chunks.append(f"--{out_boundary}--\r\n".encode())
        return Response(200, b"".join(chunks), [("Content-Type", f"multipart/mixed; boundary={out_boundary}")])

    def _batch_part(self, outer: dict[str, str], content: bytes) -> Response:
        head, body = _split_head(content)
        request_line, _, rest = head.decode("latin-1").partition("\n")
        pieces = request_line.strip().split(" ")
        if len(pieces) < 2:
            return error_response(GmailError(400, "Invalid batch part.", reason="badRequest"))
        target = re.sub(r"^https?://[^/]+", "", pieces[1])
        path, _, query = target.partition("?")
        part_headers = _parse_headers(rest.encode("latin-1"))
        if "authorization" not in part_headers and "authorization" in outer:
            part_headers["authorization"] = outer["authorization"]
        params = parse_qs(query, keep_blank_values=True)
        if path.startswith("/upload/"):
            return error_response(GmailError(400, "Media upload is not supported in batch.", reason="badRequest"))
        return self.call(pieces[0].upper(), path, params, part_headers, body)

    # --- uploads ----------------------------------------------------------------------------------------
    def _upload(
        self,
        verb: str,
        path: str,
        params: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        environ: dict[str, Any],
    ) -> Response:
        api_path = re.sub(r"^(/resumable)?/upload", "", path)
        kind = (params.get("uploadType") or [""])[-1]
        if kind == "resumable":
            return self._resumable(verb, api_path, params, headers, body, environ)
        if kind == "multipart":
            boundary = _boundary(headers.get("content-type", ""))
            parts = split_multipart(body, boundary) if boundary else []
            if len(parts) != 2:
                raise GmailError(400, "Invalid multipart upload.", reason="badContent")
            return self.call(verb, api_path, params, headers, parts[0][1], media=parts[1][1])
        if kind == "media":
            return self.call(verb, api_path, params, headers, b"", media=body)
        raise GmailError(400, "Invalid upload request: uploadType.", reason="invalidParameter")

    def _resumable(
        self,
        verb: str,
        api_path: str,
        params: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        environ: dict[str, Any],
    ) -> Response:
        upload_id = (params.get("upload_id") or [""])[-1]
        if not upload_id:
            email = self._email(headers.get("authorization"), params)
            if email is None:
                raise _unauthorized()
            upload_id = secrets.token_urlsafe(16)
            clean = {key: value for key, value in params.items() if key != "upload_id"}
            with self._uploads_lock:
                self._uploads[upload_id] = _Upload(email, api_path, clean, body)
            scheme = environ.get("wsgi.url_scheme", "http")
            query = urlencode({**{k: v[-1] for k, v in clean.items()}, "upload_id": upload_id})
            location = f"{scheme}://{headers['host']}/upload{api_path}?{query}"
            return Response(200, b"", [("Location", location)])
        with self._uploads_lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            raise not_found()
        upload.data += body
        total = re.search(r"/(\d+|\*)\s*$", headers.get("content-range", ""))
        if total and total.group(1) != "*" and len(upload.data) < int(total.group(1)):
            return Response(308, b"", [("Range", f"bytes=0-{len(upload.data) - 1}")])
        with self._uploads_lock:
            self._uploads.pop(upload_id, None)
        return self.call("POST", upload.path, upload.params, headers, upload.metadata, media=bytes(upload.data))

    # --- sandbox control ----------------------------------------------------------------------------------
    def _control(self, verb: str, path: str, body: bytes) -> Response:
        """POST /gmail/v1/sandbox/users/{email}/messages {"messages": [{"raw", "labelIds"?}]} -> {"ids"}."""
        match = re.fullmatch(r"/gmail/v1/sandbox/users/([^/]+)/messages", path)
        if verb != "POST" or not match:
            raise not_found()
        email = unquote(match.group(1))
        try:
            items = json.loads(body or b"{}").get("messages", [])
        except ValueError as exc:
            raise GmailError(400, "Invalid JSON payload received.", reason="parseError") from exc
        self.store.add_user(email)
        with self.store.lock:
            start = len(self.store.mailbox(email).messages)
        ids = []
        for offset, item in enumerate(items):
            raw = b64url_decode(item["raw"])
            labels = item.get("labelIds") or seed_labels(raw, owner=email, index=start + offset)
            ids.append(self.store.insert_message(email, raw, label_ids=labels))
        return Response.json(200, {"ids": ids})
