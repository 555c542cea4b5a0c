"""First-run secrets for an embedded install, kept in the ignored ``var/`` folder, and that folder's modes."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, generate: Callable[[], str]) -> str:
    """Return the secret stored at ``path``, writing a new one (mode 0600) if there is none."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


def new_django_secret() -> str:
    return secrets.token_urlsafe(50)


def new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: keys, the database and mail live in it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def sqlite_file_prepare(name: object) -> None:
    """Create the SQLite file as 0600 (SQLite itself would use the umask, 0644 on most systems), or tighten it."""
    if not name or str(name) == ":memory:" or str(name).startswith("file:"):
        return
    path = Path(str(name))
    if not path.parent.exists():
        private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:  # an install from before this rule
            file.chmod(0o600)
