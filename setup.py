"""Packaging hook (the metadata is in pyproject.toml): the wheel carries the shipped models.

In the source tree the bundles stay in ``engines/`` (``default``, ``fast``, ``hq`` and the
lip-sync expert ``syncnet``), where the training and export scripts write them and where an
editable install reads them. A built package copies them to ``rtdub/_engines/``, where
:mod:`rtdub.model` finds them when no source tree is around. ``MANIFEST.in`` puts them in the
sdist, so that a wheel built from the sdist carries them too.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLES = ("default", "fast", "hq", "syncnet")  # engines/<name> -> rtdub/_engines/<name>
EXTRA = ("MODEL_CARD.md",)  # engines/<file> -> rtdub/_engines/<file>


def _shipped_files() -> list[tuple[Path, Path]]:
    """(source, path inside the package) of every shipped model file."""
    src = ROOT / "engines"
    pairs = [(src / name, Path(name)) for name in EXTRA]
    for name in BUNDLES:
        folder = src / name
        if not (folder / "manifest.json").is_file():
            raise SystemExit(f"{folder}: not a model bundle (no manifest.json); cannot package rtdub")
        pairs += [(f, Path(name) / f.name) for f in sorted(folder.iterdir()) if f.is_file()]
    return pairs


class BuildPyWithModels(build_py):
    """build_py, then the shipped bundles into the built package (not for an editable
    install: that reads engines/ in place)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for src, rel in _shipped_files():
            dst = Path(self.build_lib) / "rtdub" / "_engines" / rel
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [str(Path(self.build_lib) / "rtdub" / "_engines" / rel) for _, rel in _shipped_files()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithModels})
