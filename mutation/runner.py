"""The test command mutmut runs for each mutant: the module's test files, on each configured database.

Exit status 1 when any run fails, whatever pytest's own code was (mutmut 2 counts only 1 as "killed",
so a mutant that broke collection, exit 2, would otherwise pass for a survivor), 0 when all pass.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", action="append", default=[], help="sqlite, or a postgres:// URL")
    parser.add_argument("--timeout", type=int, default=60)
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args(argv)
    for database in args.database or ["sqlite"]:
        env = dict(os.environ)
        if database == "sqlite":
            env.pop("DATABASE_URL", None)
        else:
            env["DATABASE_URL"] = database
        command = [
            sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:cacheprovider", "-p", "no:xdist",
            "-m", "not browser", f"--timeout={args.timeout}", *args.tests,
        ]
        if subprocess.run(command, env=env, check=False).returncode != 0:  # noqa: S603 - our own interpreter
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
