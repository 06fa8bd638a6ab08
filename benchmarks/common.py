"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path | None, data: object) -> None:
    """Write ``data`` as indented JSON to ``path`` (parents created); nothing when None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
