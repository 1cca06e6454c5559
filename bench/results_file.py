"""Where every benchmark's results go: one JSON file (git-ignored bench/results/ by default)."""

from __future__ import annotations

import json
from pathlib import Path


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
