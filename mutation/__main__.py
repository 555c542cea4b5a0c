"""Mutation testing per module: ``python -m mutation [MODULE ...]`` (``make mutation``).

For each module of ``mutation/modules.toml``: copy the work tree to ``var/mutation/<module>/`` (mutmut 2
mutates files in place, so the checkout you work in is never touched), run mutmut there against that
module's test files only (``mutation/runner.py``, ``pytest -x``), then score it:

    score = killed / (total - equivalent)

Killed counts mutants the tests failed on (a timeout counts: the test hung instead of passing).
Equivalent mutants (no test can tell them apart from the original) are the reviewed list in
``mutation/equivalent.toml``, matched by file, enclosing function and the changed line before and after,
so line numbers may shift. Writes ``mutation/results/<module>.json`` and prints every survivor's diff.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
RESULTS = HERE / "results"
SCRATCH = ROOT / "var" / "mutation"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/mutation"
# The tests run with the project's interpreter; mutmut (and this driver) run from .venv-mutation.
TEST_PYTHON = os.environ.get("MUTATION_TEST_PYTHON", str(ROOT / ".venv" / "bin" / "python"))

KILLED_STATUSES = {"ok_killed", "ok_suspicious", "bad_timeout"}


@dataclass
class Mutant:
    id: int
    file: str
    line_number: int  # 1-based, in the file as it was mutated
    where: str  # the enclosing function or class, "<module>" at top level
    line: str  # the changed line(s), stripped, before ...
    mutant: str  # ... and after
    status: str  # killed, timeout, survived, equivalent, untested

    def key(self) -> tuple[str, str, str, str]:
        return (self.file, self.where, self.line, self.mutant)


@dataclass
class ModuleResult:
    module: str
    paths: list[str]
    tests: list[str]
    databases: list[str]
    command: str
    seconds: float
    total: int = 0
    killed: int = 0
    timeout: int = 0
    equivalent: int = 0
    survived: int = 0
    untested: int = 0
    score: float = 0.0
    stale_equivalents: list[dict] = field(default_factory=list)
    mutants: list[Mutant] = field(default_factory=list)


def _modules() -> dict[str, dict]:
    return tomllib.loads((HERE / "modules.toml").read_text())


def _equivalents() -> dict[str, list[dict]]:
    path = HERE / "equivalent.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def _work_tree_copy(target: Path, *, keep_cache: bool) -> None:
    """Copy tracked and untracked-but-not-ignored files (the tree as you have it, not only what is committed)."""
    cache = target / ".mutmut-cache"
    saved = cache.read_bytes() if keep_cache and cache.exists() else None
    if target.exists():
        shutil.rmtree(target)
    listing = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if saved is not None:
        cache.write_bytes(saved)


def _databases(name: str, config: dict) -> list[str]:
    # A database per module: two modules run at once must not share pytest-django's test database (they
    # did, and each made the other's tests fail: mutants "killed" by a collision, not by a test).
    url = os.environ.get("MUTATION_DATABASE_URL", DEFAULT_DATABASE_URL).rstrip("/") + f"_{name}"
    return ["sqlite" if db == "sqlite" else url for db in config.get("databases", ["sqlite"])]


def _runner_command(name: str, config: dict) -> str:
    parts = [TEST_PYTHON, "-m", "mutation.runner", f"--timeout={config.get('timeout', 60)}"]
    parts += [f"--database={database}" for database in _databases(name, config)]
    if config.get("reuse_sqlite"):
        parts.append(f"--sqlite-template={SCRATCH / name / 'var' / 'test-template.sqlite3'}")
    if config.get("select"):
        parts.append(f"--select={config['select']}")
    return " ".join([*parts, *config["tests"]])


def _enclosing(source: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function and class, outermost first."""
    spans: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                spans.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return spans


def _where(spans: list[tuple[int, int, str]], line_number: int) -> str:
    inside = [s for s in spans if s[0] <= line_number <= s[1]]
    return max(inside, key=lambda s: s[0])[2] if inside else "<module>"


def _mutants_read(scratch: Path) -> list[Mutant]:
    from mutmut import Context, RelativeMutationID, mutate

    # Read a copy: a reader's lock makes a running mutmut fail its next write ("database is locked").
    with tempfile.TemporaryDirectory() as tmp:
        cache = shutil.copy(scratch / ".mutmut-cache", Path(tmp) / "cache")
        with closing(sqlite3.connect(cache)) as db:
            rows = db.execute(
                "SELECT m.id, s.filename, l.line, l.line_number, m.`index`, m.status FROM Mutant m JOIN Line l"
                " ON m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id ORDER BY s.filename, l.line_number, m.id"
            ).fetchall()
    mutants: list[Mutant] = []
    sources: dict[str, tuple[str, list]] = {}
    for mutant_id, filename, line, line_number, index, status in rows:
        if filename not in sources:
            original = scratch / f"{filename}.bak"  # mutmut's copy while a mutant is on disk
            text = (original if original.exists() else scratch / filename).read_text()
            sources[filename] = (text, _enclosing(text))
        source, spans = sources[filename]
        mutation_id = RelativeMutationID(line=line, index=index, line_number=line_number, filename=filename)
        mutated, _ = mutate(Context(source=source, mutation_id=mutation_id, filename=filename))
        before, after = source.split("\n"), mutated.split("\n")
        removed: list[str] = []
        added: list[str] = []
        changed_lines: list[int] = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
            if tag != "equal":
                changed_lines.append(i1 + 1)
                removed += [x.strip() for x in before[i1:i2]]
                added += [x.strip() for x in after[j1:j2]]
        first = min(changed_lines, default=line_number + 1)
        mutants.append(
            Mutant(
                id=mutant_id,
                file=filename,
                line_number=first,
                where=_where(spans, first),
                line=" / ".join(removed),
                mutant=" / ".join(added),
                status={
                    "ok_killed": "killed",
                    "ok_suspicious": "killed",
                    "bad_timeout": "timeout",
                    "bad_survived": "survived",
                }.get(status, "untested"),
            )
        )
    return mutants


def _score(result: ModuleResult, equivalents: list[dict]) -> None:
    wanted = {(e["file"], e["where"], e["line"], e["mutant"]): e for e in equivalents}
    matched: set[tuple] = set()
    for mutant in result.mutants:
        if mutant.key() in wanted:
            matched.add(mutant.key())
            if mutant.status in {"survived", "untested"}:
                mutant.status = "equivalent"
            else:  # listed as equivalent, yet a test noticed it: the list is wrong
                result.stale_equivalents.append({**wanted[mutant.key()], "status": mutant.status})
    result.stale_equivalents += [{**e, "status": "not generated"} for k, e in wanted.items() if k not in matched]
    counts = {
        status: sum(m.status == status for m in result.mutants)
        for status in ("killed", "timeout", "equivalent", "survived", "untested")
    }
    result.total = len(result.mutants)
    result.killed, result.timeout = counts["killed"] + counts["timeout"], counts["timeout"]
    result.equivalent, result.survived, result.untested = counts["equivalent"], counts["survived"], counts["untested"]
    scored = result.total - result.equivalent
    result.score = round(100 * result.killed / scored, 1) if scored else 100.0


@contextmanager
def _zygote(scratch: Path) -> Iterator[str]:
    """A warm test process for this run (mutation/zygote.py); yields its socket path."""
    path = f"/tmp/mailhub-mutation-{os.getpid()}-{scratch.name}.sock"  # noqa: S108 - a UNIX socket path must be short
    process = subprocess.Popen([TEST_PYTHON, "-m", "mutation.zygote", path], cwd=scratch)  # noqa: S603
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test zygote did not start (exit {process.returncode})")
            time.sleep(0.1)
        yield path
    finally:
        process.terminate()
        process.wait(30)


def module_report(name: str, config: dict, equivalents: list[dict]) -> ModuleResult:
    """The score of the last (or still running) run of ``name``, from its cache."""
    scratch = SCRATCH / name
    result = ModuleResult(
        module=name,
        paths=config["paths"],
        tests=config["tests"],
        databases=config.get("databases", ["sqlite"]),
        command=f"python -m mutation {name}",
        seconds=0.0,
        mutants=_mutants_read(scratch),
    )
    _score(result, equivalents)
    return result


def module_run(name: str, config: dict, equivalents: list[dict], *, keep_cache: bool) -> ModuleResult:
    scratch = SCRATCH / name
    _work_tree_copy(scratch, keep_cache=keep_cache)
    runner = _runner_command(name, config)
    test_dirs = sorted({str(Path(t).parent if t.endswith(".py") else Path(t)) for t in config["tests"]})
    command = [
        str(Path(sys.executable).with_name("mutmut")),
        "run",
        "--paths-to-mutate",
        ",".join(config["paths"]),
        "--runner",
        runner,
        "--tests-dir",
        ",".join(test_dirs),
        "--simple-output",
        "--no-progress",
    ]
    log = scratch / "mutmut.log"
    print(
        f"[{name}] mutating {', '.join(config['paths'])} against {' '.join(config['tests'])} (log: {log})", flush=True
    )
    started = time.monotonic()
    with log.open("w") as out, _zygote(scratch) as socket_path:
        env = {**os.environ, "MUTATION_ZYGOTE": socket_path, "MUTATION_PYTEST_LOG": str(scratch / "pytest.log")}
        code = subprocess.run(  # noqa: S603
            command, cwd=scratch, stdout=out, stderr=subprocess.STDOUT, check=False, env=env
        ).returncode
        # mutmut 2 can leave a mutant "untested" (e.g. one that was running when a run was stopped, with
        # --keep-cache): run those one by one.
        for mutant in [m for m in _mutants_read(scratch) if m.status == "untested" and not code & 1]:
            subprocess.run(  # noqa: S603
                [*command[:2], str(mutant.id), *command[2:]],
                cwd=scratch,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                env=env,
            )
    seconds = round(time.monotonic() - started, 1)
    if code & 1:  # mutmut's "fatal error" bit: e.g. the tests fail without any mutation
        sys.exit(f"[{name}] mutmut failed (exit {code}); see {log}")
    result = ModuleResult(
        module=name,
        paths=config["paths"],
        tests=config["tests"],
        databases=config.get("databases", ["sqlite"]),
        command=f"python -m mutation {name}",
        seconds=seconds,
        mutants=_mutants_read(scratch),
    )
    _score(result, equivalents)
    return result


def _report(result: ModuleResult) -> None:
    for mutant in result.mutants:
        if mutant.status in {"survived", "untested"}:
            print(
                f"  {mutant.status}: {mutant.file}:{mutant.line_number} in {mutant.where}\n"
                f"    - {mutant.line}\n    + {mutant.mutant}"
            )
    for stale in result.stale_equivalents:
        print(f"  listed as equivalent but {stale['status']}: {stale['file']} {stale['where']}: {stale['line']}")
    print(
        f"[{result.module}] {result.killed} killed ({result.timeout} by timeout) of {result.total} mutants, "
        f"{result.equivalent} equivalent, {result.survived} survived, {result.untested} untested: "
        f"score {result.score}% in {result.seconds:.0f} s",
        flush=True,
    )


def _equivalent_draft(result: ModuleResult) -> None:
    for mutant in result.mutants:
        if mutant.status == "survived":
            print(f"[[{result.module}]]")
            for key in ("file", "where", "line", "mutant"):
                print(f"{key} = {json.dumps(getattr(mutant, key), ensure_ascii=False)}")
            print('reason = "TODO"\n')


def main(argv: list[str] | None = None) -> int:
    modules = _modules()
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(modules)}")
    parser.add_argument(
        "--keep-cache",
        action="store_true",
        help="reuse the previous run's results for lines and tests that did not change",
    )
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 if a module scores below this")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print the last (or running) run's survivors and score; run nothing, write nothing",
    )
    parser.add_argument(
        "--equivalent-draft",
        action="store_true",
        help="print the last run's survivors as mutation/equivalent.toml entries, to review by hand",
    )
    args = parser.parse_args(argv)
    unknown = set(args.modules) - set(modules)
    if unknown:
        parser.error(f"unknown module(s) {', '.join(sorted(unknown))}; known: {', '.join(modules)}")
    equivalents = _equivalents()
    RESULTS.mkdir(exist_ok=True)
    failed = False
    for name in args.modules or list(modules):
        if args.report_only or args.equivalent_draft:
            result = module_report(name, modules[name], equivalents.get(name, []))
            if args.equivalent_draft:
                _equivalent_draft(result)
            else:
                _report(result)
            continue
        result = module_run(name, modules[name], equivalents.get(name, []), keep_cache=args.keep_cache)
        _report(result)
        (RESULTS / f"{name}.json").write_text(json.dumps(asdict(result), indent=1, ensure_ascii=False) + "\n")
        failed |= result.score < args.fail_under
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
