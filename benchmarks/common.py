"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
from pathlib import Path

from rtdub import atomic


def write_json(path: Path | None, data: object) -> None:
    """Write ``data`` as indented JSON to ``path`` (parents created); nothing when None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def write_results(out: Path, stem: str, doc: object, lines: list[str]) -> None:
    """OUT/stem.json (the record) and OUT/stem.md (the table, also printed), each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / f"{stem}.json", json.dumps(doc, indent=1) + "\n")
    atomic.write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
