"""The test command mutmut runs for each mutant: the module's test files, on each configured database.

Exit status 1 when any run fails, whatever pytest's own code was (mutmut 2 counts only 1 as "killed",
so a mutant that broke collection, exit 2, would otherwise pass for a survivor), 0 when all pass.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy an SQLite database with its WAL files (a missing source removes the target)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        destination = Path(f"{target}{suffix}")
        destination.unlink(missing_ok=True)
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", destination)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", action="append", default=[], help="sqlite, or a postgres:// URL")
    parser.add_argument("--timeout", type=int, default=60)
    parser.add_argument(
        "--sqlite-template",
        default="",
        help="start each SQLite run from a copy of this migrated database (made on the first run)",
    )
    parser.add_argument("--select", default="", help="pytest -k: run only the tests this expression picks")
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args(argv)
    for database in args.database or ["sqlite"]:
        env = dict(os.environ)
        if database == "sqlite":
            env.pop("DATABASE_URL", None)
        else:
            env["DATABASE_URL"] = database
        pytest_args = [
            "-x",
            "-q",
            "--no-header",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-m",
            "not browser and not faults",
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
            f"--timeout={args.timeout}",
            *(["-k", args.select] if args.select else []),
            *args.tests,
        ]
        template = Path(args.sqlite_template) if database == "sqlite" and args.sqlite_template else None
        if template is not None:
            working = template.with_name("test-run.sqlite3")
            env["MAILHUB_TEST_SQLITE"] = str(working)
            _sqlite_copy(template, working)  # a missing template: this run migrates and keeps it
            pytest_args.append("--reuse-db")
        zygote = os.environ.get("MUTATION_ZYGOTE")
        if zygote:  # a warm process forks the run (see mutation/zygote.py)
            from mutation.zygote import run

            code = run(
                zygote,
                argv=pytest_args,
                env=env,
                timeout=args.timeout * 20,
                log=os.environ.get("MUTATION_PYTEST_LOG", ""),
            )
        else:
            command = [sys.executable, "-m", "pytest", *pytest_args]
            code = subprocess.run(command, env=env, check=False).returncode  # noqa: S603 - our own interpreter
        if template is not None and not template.exists() and code == 0:
            _sqlite_copy(working, template)
        if code != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
