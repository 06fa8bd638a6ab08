"""An installed rtdub carries its models: a wheel (built from the sdist, as ``python -m build``
does) installed in a fresh virtual environment dubs and scores a clip from a folder outside
the source tree, with the bundles and the lip-sync expert it ships; and ``--model`` takes a
shipped bundle's name wherever rtdub runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import rtdub
from rtdub import model
from rtdub.exceptions import ModelError

from .factories import speechlike, talking_clip, write_wav

SOURCE = Path(rtdub.__file__).resolve().parent.parent
# what the build reads: the project files and the two trees (the rest is not packaged)
PROJECT_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
PROJECT_TREES = ("rtdub", "engines")


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def build_wheel(tmp: Path) -> Path:
    """sdist from a copy of the working tree, then a wheel from the unpacked sdist, offline
    (no build isolation: the dev venv's setuptools builds)."""
    needs = {"setuptools": ((77,), "pyproject.toml's build requirement"), "pip": ((22, 3), "pip --python")}
    for tool, (oldest, what) in needs.items():
        try:
            have = version(tool)
        except PackageNotFoundError:
            pytest.skip(f"{tool} is not installed: no offline build")
        if tuple(int(x) for x in have.split(".")[: len(oldest)]) < oldest:
            pytest.skip(f"{tool} {have} is older than {what} needs")
    src = tmp / "src"
    src.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(SOURCE / name, src / name)
    for name in PROJECT_TREES:
        shutil.copytree(SOURCE / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    sdist_dir = tmp / "sdist"
    code = f"from setuptools import build_meta as b; print(b.build_sdist({str(sdist_dir)!r}))"
    sdist = sdist_dir / run([sys.executable, "-c", code], cwd=src).stdout.strip().splitlines()[-1]
    unpacked = tmp / "unpacked"
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
            tar.extractall(unpacked, filter="data")
        else:
            tar.extractall(unpacked)  # noqa: S202 - our own sdist
    (root,) = unpacked.iterdir()
    dist = tmp / "dist"
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    run([*wheel_cmd, "-w", dist, root], cwd=root)
    (wheel,) = dist.glob("rtdub-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv without the system's or the dev venv's site-packages; the dev venv's
    dependencies (not its editable rtdub, whose finder only runs from a .pth there) are
    reached by a path line, after the venv's own site-packages. The wheel goes in alone."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout
    dev = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib.strip(), "dev-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(dev)))
    install = ["install", "-q", "--no-deps", "--no-index", str(wheel)]
    run([sys.executable, "-m", "pip", "--python", python, *install], cwd=tmp)
    return venv


@pytest.mark.slow
def test_an_installed_wheel_dubs_and_scores_outside_the_source_tree(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "build")
    venv = fresh_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"  # the working folder: no engines/ here or above
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    python, rtdub_cmd = venv / "bin" / "python", venv / "bin" / "rtdub"

    where = "import json, rtdub.model as m, rtdub.measure.avsync as a; "
    where += "print(json.dumps([m.__file__, str(m.DEFAULT_MODEL_DIR), str(a.default_expert_dir())]))"
    paths = [Path(p) for p in json.loads(run([python, "-c", where], cwd=elsewhere, env=env).stdout)]
    for p in paths:  # the installed copy, not the source tree
        assert p.is_relative_to(venv), paths
    assert (paths[1] / "manifest.json").is_file() and (paths[2] / "manifest.json").is_file()

    assert run([rtdub_cmd, "--version"], cwd=elsewhere, env=env).stdout.strip() == f"rtdub {version('rtdub')}"

    clip = talking_clip(elsewhere / "clip.mp4", 1.0, 25, speechlike(1.0), size=256)
    dub = write_wav(elsewhere / "dub.wav", speechlike(1.0, seed=3))
    run([rtdub_cmd, "dub", "--video", clip.name, "--audio", dub.name, "-o", "out.mp4"], cwd=elsewhere, env=env)
    assert (elsewhere / "out.mp4").stat().st_size > 0
    hq = ["--model", "hq", "-q"]  # a shipped bundle by name
    run([rtdub_cmd, "dub", "--video", clip.name, "--audio", dub.name, "-o", "hq.mp4", *hq], cwd=elsewhere, env=env)
    assert (elsewhere / "hq.mp4").stat().st_size > 0
    scores = json.loads(
        run([rtdub_cmd, "eval", "--video", "out.mp4", "--audio", dub.name, "--json"], cwd=elsewhere, env=env).stdout
    )
    assert scores["frames"] == 25 and scores["lse_d"] is not None  # the shipped lip-sync expert scored it


def test_model_takes_a_shipped_bundle_by_name_unless_a_folder_has_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in model.SHIPPED_BUNDLES:
        assert model.load_bundle(name).root == model.ENGINES_DIR / name
    assert model.load_bundle(None).root == model.DEFAULT_MODEL_DIR
    shutil.copytree(model.ENGINES_DIR / "fast", tmp_path / "fast")
    assert model.load_bundle("fast").root == Path("fast")  # a folder here wins
    with pytest.raises(ModelError, match="shipped name: default, fast, hq"):
        model.load_bundle("nonesuch")
