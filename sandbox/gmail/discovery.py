"""Gmail's discovery document (as shipped in google-api-python-client) and a schema validator.

The client side builds its service from :func:`discovery_document` with the sandbox as root URL;
the tests check every response with :func:`schema_errors`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import re
from pathlib import Path


@functools.cache
def _shipped_document() -> dict:
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "gmail.v1.json"
    return json.loads(path.read_text(encoding="utf-8"))


def discovery_document(root_url: str | None = None) -> dict:
    """A copy of the shipped gmail.v1 document, with rootUrl/mtlsRootUrl pointed at ``root_url``."""
    document = copy.deepcopy(_shipped_document())
    if root_url is not None:
        root = root_url.rstrip("/") + "/"
        document["rootUrl"] = document["mtlsRootUrl"] = root
        document["baseUrl"] = root + document.get("servicePath", "")
    return document


@functools.cache
def methods() -> dict[str, dict]:
    """Every method by short id ("messages.get", "getProfile", ...)."""
    found: dict[str, dict] = {}

    def walk(resources: dict) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                found[method["id"].removeprefix("gmail.users.")] = method
            walk(resource.get("resources", {}))

    walk(_shipped_document()["resources"])
    return found


def method_scopes(method: str) -> frozenset[str]:
    return frozenset(methods().get(method, {}).get("scopes", ()))


def response_schema(method: str) -> str | None:
    return methods()[method].get("response", {}).get("$ref")


_UINT = re.compile(r"\d+")
_INT = re.compile(r"-?\d+")


def _byte_ok(value: str) -> bool:
    try:
        base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    return re.fullmatch(r"[A-Za-z0-9_\-+/]*=*", value) is not None


def schema_errors(value: object, schema: str | dict, path: str = "$") -> list[str]:
    """Every way ``value`` departs from the discovery ``schema`` (a name or an inline schema):
    wrong JSON types, bad int64/uint64/byte strings, enum values, and properties the schema lacks."""
    schemas = _shipped_document()["schemas"]
    spec = schemas[schema] if isinstance(schema, str) else schema
    if "$ref" in spec:
        return schema_errors(value, spec["$ref"], path)
    kind = spec.get("type")
    errors: list[str] = []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {type(value).__name__}"]
        properties = spec.get("properties", {})
        extra = spec.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], f"{path}.{key}")
            elif extra is not None:
                errors += schema_errors(item, extra, f"{path}.{key}")
            else:
                errors.append(f"{path}: unknown property {key!r}")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected array, got {type(value).__name__}"]
        for index, item in enumerate(value):
            errors += schema_errors(item, spec["items"], f"{path}[{index}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected string, got {type(value).__name__}"]
        fmt = spec.get("format")
        if (fmt == "uint64" and not _UINT.fullmatch(value)) or (fmt == "int64" and not _INT.fullmatch(value)):
            errors.append(f"{path}: {value!r} is not {fmt}")
        if fmt == "byte" and not _byte_ok(value):
            errors.append(f"{path}: not base64")
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"{path}: {value!r} not in {spec['enum']}")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected integer, got {type(value).__name__}"]
        if spec.get("format", "").startswith("uint") and value < 0:
            errors.append(f"{path}: negative {spec['format']}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected boolean, got {type(value).__name__}")
    elif kind == "number" and (not isinstance(value, int | float) or isinstance(value, bool)):
        errors.append(f"{path}: expected number, got {type(value).__name__}")
    return errors
