"""The import rules of design.md's Boundaries, checked on the source: providers speak protocols and never
reach into the mailbox or the accounts' rows; the mailbox talks to providers only through their boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_BOUNDARY = {"providers.base", "providers.errors", "providers.registry"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands (functions and TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", sources("providers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_providers_import_neither_the_mailbox_nor_the_accounts(path):
    reached = {m for m in imported_modules(path) if m.split(".")[0] in ("mailbox", "accounts")}
    assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}"


@pytest.mark.parametrize("path", sources("mailbox"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_mailbox_reaches_providers_through_their_boundary_only(path):
    provider_code = {
        m
        for m in imported_modules(path)
        if m.startswith("providers.") and m.count(".") >= 1 and ".".join(m.split(".")[:2]) not in PROVIDER_BOUNDARY
    }
    # ``providers.models``/``services``/``forms`` are the Mail settings app's public side; a provider's own
    # sub-package (``providers.google``...) is not.
    inside = {m for m in provider_code if m.split(".")[1] in ("google", "microsoft", "imap")}
    assert not inside, f"{path.relative_to(ROOT)} imports {sorted(inside)}"


def test_the_checker_sees_imports_hidden_in_functions_and_type_checking_blocks(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from accounts.models import MailAccount\n"
        "def f():\n    import mailbox.store\n    from mailbox import sync\n"
    )
    assert {"accounts.models", "mailbox.store", "mailbox.sync"} <= imported_modules(sample)
