"""The model bundles ``rtdub serve --models-dir DIR`` offers by name (enrolled people, say).

A client names a bundle; it never gives a path. A name is a direct subfolder of DIR (letters,
digits, ``_``, ``.``, ``-``; not starting with a dot, so that enrolment's work folders
``.<name>.enroll`` never show) that holds a bundle which loads. The folder is read again on
every listing, so a new enrolment shows up without a restart; loaded bundles are kept by
name and reloaded when their manifest changes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import InputError, ModelError
from ..model import ModelBundle, load_bundle

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_MODELS = 64  # listed at most (sorted by name)


@dataclass(frozen=True)
class ModelChoice:
    name: str
    label: str  # the bundle's own name (manifest "name")
    enrolled: bool  # made by rtdub enroll (it has a reference bank)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "label": self.label, "enrolled": self.enrolled}


class ModelCatalog:
    """The bundles of one folder, by name."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise InputError(str(root), "not a folder (--models-dir)")
        self.root = root.resolve()
        self._loaded: dict[str, tuple[float, ModelBundle]] = {}

    def _load(self, name: str) -> ModelBundle | None:
        path = self.root / name
        manifest = path / "manifest.json"
        try:
            if path.is_symlink() or path.resolve().parent != self.root or not manifest.is_file():
                return None
            mtime = manifest.stat().st_mtime
        except OSError:
            return None
        cached = self._loaded.get(name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            bundle = load_bundle(path)
        except ModelError as exc:
            logger.warning("models folder: %s is not a usable bundle (%s)", name, exc)
            self._loaded.pop(name, None)
            return None
        self._loaded[name] = (mtime, bundle)
        return bundle

    def choices(self) -> list[ModelChoice]:
        out: list[ModelChoice] = []
        for p in sorted(self.root.iterdir()):
            if len(out) >= MAX_MODELS:
                break
            if NAME.fullmatch(p.name) and (b := self._load(p.name)) is not None:
                out.append(ModelChoice(p.name, str(b.info.get("name", p.name)), bool(b.references)))
        return out

    def resolve(self, name: object) -> Path:
        """The folder of the bundle called ``name``; InputError for anything that is not the
        name of a listed bundle (a path, a hidden folder, a broken bundle, ...)."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InputError("model", "must be the name of a bundle in the server's models folder")
        if self._load(name) is None:
            raise InputError("model", f"no model called {name!r} in the server's models folder")
        return self.root / name
