"""`make bench`: run each benchmark section, print its figures and write them to bench/results/.

A section is a module in this package with ``run() -> dict``; ``python -m bench gmail`` runs one.
"""

import importlib
import json
import os
import sys
import time
from pathlib import Path

SECTIONS = ["gmail", "imap", "ui", "memory", "batch", "quota", "watch"]
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhub.settings")
    import django

    django.setup()
    RESULTS.mkdir(exist_ok=True)
    for name in argv or SECTIONS:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"[{name}] not available yet")
            continue
        started = time.time()
        figures = module.run()
        figures["section"] = name
        figures["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        figures["wall_seconds"] = round(time.time() - started, 2)
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"[{name}] " + json.dumps(figures, indent=2, sort_keys=True))
        print(f"[{name}] written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
