"""Enrolment (issue 19): the generic generator's torch weights recovered from its ONNX export,
and ``rtdub enroll`` on generated media."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub import audio, media
from rtdub.cli.main import main as cli_main
from rtdub.face.lipunits import LIP_IDX
from rtdub.face.tracker import FaceTracker
from rtdub.measure import samples
from rtdub.model import load_bundle

from .factories import faceless_clip, speechlike, write_wav
from .test_cli_frontend import run_on_terminal

torch = pytest.importorskip("torch")

from torch import Generator, Tensor  # noqa: E402

from engines.onnx_export import export_onnx  # noqa: E402
from engines.onnx_weights import (  # noqa: E402
    RecoveryError,
    generator_from_bundle,
    load_onnx_weights,
    parity,
)
from rtdub.model import DEFAULT_MODEL_DIR  # noqa: E402
from training.enroll import work_dir  # noqa: E402
from training.models import GenConfig, LipToFace  # noqa: E402

PARITY_TOL = 1e-4


def _randomised(cfg: GenConfig, seed: int) -> LipToFace:
    """A generator whose every weight and BatchNorm statistic is random (running means and
    variances far from 0 and 1, so a fold that ignored them would show)."""
    torch.manual_seed(seed)
    m = LipToFace(cfg)
    for p in m.parameters():
        p.data.normal_(0, 0.05)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.3, 3.0)
            mod.weight.data.uniform_(0.5, 1.5)
    return m.eval()


def _inputs(n: int, g: Generator) -> tuple[Tensor, Tensor, Tensor]:
    pose, ref = torch.rand(n, 3, 96, 96, generator=g), torch.rand(n, 3, 96, 96, generator=g)
    return pose, ref, torch.randn(n, 5, 9, generator=g)


def test_the_shipped_generator_comes_back_in_torch() -> None:
    model, rec = generator_from_bundle(DEFAULT_MODEL_DIR)
    assert len(rec.folded) == 14 and rec.named  # 7 blocks x 2 conv+bn; the linears and the head by name
    err = parity(model, DEFAULT_MODEL_DIR / "generator.onnx", batch=3, seed=1)
    assert max(err.values()) < PARITY_TOL, err


@pytest.mark.parametrize("full_colour", [False, True])
def test_recovered_weights_compute_the_exported_function(tmp_path: Path, full_colour: bool) -> None:
    """Export a random generator (its BatchNorms folded into the convs), recover it into a
    fresh module, and compare both with the original torch module and with onnxruntime."""
    cfg = GenConfig(base=8, full_colour=full_colour)
    original = _randomised(cfg, seed=3)
    f = tmp_path / "g.onnx"
    export_onnx(original, f, None)
    back = LipToFace(cfg)
    rec = load_onnx_weights(back, f)
    back.eval()
    assert len(rec.folded) == 14
    assert max(parity(back, f, batch=2).values()) < PARITY_TOL
    g = torch.Generator().manual_seed(7)
    x = _inputs(2, g)
    with torch.no_grad():
        diff = (original(*x) - back(*x)).abs().max().item()
    assert diff < PARITY_TOL


def test_a_graph_of_another_model_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "g.onnx"
    export_onnx(_randomised(GenConfig(base=8), seed=0), f, None)
    with pytest.raises(RecoveryError, match="shape"):
        load_onnx_weights(LipToFace(GenConfig(base=12)), f)
    with pytest.raises(RecoveryError):  # the full-colour head's tensors are not in the graph
        load_onnx_weights(LipToFace(GenConfig(base=8, full_colour=True)), f)


def test_frozen_batchnorm_keeps_the_function_in_training_mode() -> None:
    """A fine-tune trains with the BatchNorms in eval mode: the recovered statistics (identity)
    are not the original's, so batch statistics would change the function."""
    from engines.onnx_weights import freeze_batchnorm

    model, _ = generator_from_bundle(DEFAULT_MODEL_DIR)
    g = torch.Generator().manual_seed(0)
    x = _inputs(4, g)
    with torch.no_grad():
        ref = model(*x)
        drifting = copy.deepcopy(model).train()  # batch statistics (and running ones updated)
        drifted = drifting(*x)
        model.train()
        assert freeze_batchnorm(model) == 14
        frozen = model(*x)
    assert (drifted - ref).abs().max().item() > 1e-2
    assert np.allclose(frozen.numpy(), ref.numpy(), atol=1e-6)


# --- rtdub enroll on generated media --------------------------------------------------------------

FPS = 25.0
SIDE = 384  # the portrait at 384 px: a face crop of about 110 frame pixels (>= MIN_FACE_PX)


def _talking_frames(seconds: float, wav: np.ndarray) -> list[np.ndarray]:
    """The portrait, its head swaying and its lower lip pulled down with the loudness of
    ``wav`` (a smooth displacement below the mouth): a face that talks, made in milliseconds."""
    img = cv2.resize(samples.portrait(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    with FaceTracker() as tr:
        obs = tr.track(img, 0.0)
    assert obs is not None
    lips = obs.landmarks[LIP_IDX]
    cx, cy = lips.mean(0)
    width = float(np.ptp(lips[:, 0]))
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    # 1 on the lower lip and chin just below the mouth's centre line, fading out around it
    fall = np.exp(-(((xx - cx) / (0.6 * width)) ** 2)) * np.clip((yy - cy + 2) / 4, 0, 1)
    fall *= np.exp(-(np.clip(yy - cy - 0.5 * width, 0, None) ** 2) / (0.5 * width) ** 2)
    n = int(round(seconds * FPS))
    hop = audio.SAMPLE_RATE / FPS
    env = np.array([np.sqrt(np.mean(wav[int(i * hop) : int((i + 1) * hop)] ** 2)) for i in range(n)])
    env = env / max(float(env.max()), 1e-6)
    frames = []
    for i in range(n):
        opened = cv2.remap(img, xx, yy - 0.25 * width * env[i] * fall, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        m = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), 2.0 * np.sin(2 * np.pi * 0.23 * i / FPS), 1.0)
        frames.append(cv2.warpAffine(opened, m, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return frames


@pytest.fixture(scope="module")
def talking(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15.5 s of a talking face (70 %: just over the 10 s minimum of training footage)."""
    wav = speechlike(15.5, seed=3)
    path = tmp_path_factory.mktemp("media") / "me.mp4"
    return samples.write_clip(path, _talking_frames(15.5, wav), FPS, wav)


def _enroll_cmd(video: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rtdub", "enroll", "--video", str(video), "-o", str(out), *extra]


@dataclass(frozen=True)
class Runs:
    out: Path
    interrupted: subprocess.CompletedProcess[str]
    work_after_interrupt: set[str]
    checkpoint_step: int
    resumed: tuple[int, str]  # exit code, what the terminal showed


@pytest.fixture(scope="module")
def runs(talking: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """``rtdub enroll`` stopped by SIGTERM during its fine-tune, then the same command again
    (on a terminal: the progress bars)."""
    out = tmp_path_factory.mktemp("models") / "me"
    cmd = _enroll_cmd(talking, out, "--minutes", "0.15", "--eval-seconds", "2", "-vv")
    work = work_dir(out)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # until the fine-tune has made two steps
        seen.append(line)
        if "fine-tune step 2 " in line:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    interrupted = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    files = {str(p.relative_to(work)) for p in work.rglob("*")} if work.is_dir() else set()
    meta = work / "checkpoint" / "meta.json"
    step = int(json.loads(meta.read_text())["step"]) if meta.is_file() else -1
    resumed = run_on_terminal(cmd[:-1])  # without -vv: what a user sees
    return Runs(out, interrupted, files, step, resumed)


def test_an_interrupted_enrolment_leaves_no_bundle_and_resumes(runs: Runs) -> None:
    assert runs.interrupted.returncode == 130, runs.interrupted.stderr[-2000:]
    assert "rtdub: interrupted" in runs.interrupted.stderr and "the same command resumes" in runs.interrupted.stderr
    assert "WARNING" in runs.interrupted.stderr and "60 s or more is recommended" in runs.interrupted.stderr
    assert runs.checkpoint_step >= 2, runs.work_after_interrupt  # SIGTERM saved the fine-tune's checkpoint
    assert {
        "v0.npz",
        "bank.npz",
        "checkpoint/model.safetensors",
        "checkpoint/optim.safetensors",
    } <= runs.work_after_interrupt
    code, terminal = runs.resumed
    assert code == 0, terminal[-2000:]
    assert "fine-tune:" in terminal and "<" in terminal  # a bar with elapsed<remaining
    assert (runs.out / "manifest.json").is_file()
    assert not work_dir(runs.out).exists()  # the work (crops of every frame) is gone


def test_the_resumed_run_continued_the_checkpoint(runs: Runs, talking: Path) -> None:
    m = json.loads((runs.out / "manifest.json").read_text())
    en = m["enrolment"]
    assert en["recipe"]["steps_done"] > runs.checkpoint_step
    src = en["sources"][0]
    assert src["sha256"] == hashlib.sha256(talking.read_bytes()).hexdigest()
    assert abs(src["duration"] - 15.5) < 0.1 and 10.0 < src["train_s"] < 11.5 and 4.0 < src["test_s"] < 5.0
    assert (
        en["base"]["generator_sha256"]
        == hashlib.sha256((DEFAULT_MODEL_DIR / "generator.onnx").read_bytes()).hexdigest()
    )
    for label in ("before", "after"):
        for mode in ("true-units", "model"):
            s = en["metrics"][label][mode]
            assert s["frames"] > 30 and all(np.isfinite(s[k]) for k in ("LMD", "MOC", "PSNR", "SSIM", "sharpness"))


def test_the_enrolled_bundle_dubs_a_clip(runs: Runs, tmp_path: Path) -> None:
    bundle = load_bundle(runs.out)
    assert [r.name for r in bundle.references] == ["closed", "mid", "open"]
    assert bundle.references[0].gap < bundle.references[1].gap < bundle.references[2].gap
    img = cv2.resize(samples.portrait(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    clip = samples.write_clip(tmp_path / "in.mp4", list(samples.head_motion(img, 25, FPS)), FPS, speechlike(1.0))
    wav = write_wav(tmp_path / "dub.wav", speechlike(1.0, seed=9))
    out = tmp_path / "out.mp4"
    assert (
        cli_main(["dub", "--video", str(clip), "--audio", str(wav), "-o", str(out), "--model", str(runs.out), "-q"])
        == 0
    )
    assert media.probe_video(out).n_frames >= 24


def test_the_bundle_holds_no_frames_beyond_its_reference_crops(runs: Runs) -> None:
    m = json.loads((runs.out / "manifest.json").read_text())
    listed = {r["file"] for r in m["references"]} | {r["hires"] for r in m["references"]}
    files = {str(p.relative_to(runs.out)) for p in runs.out.rglob("*") if p.is_file()}
    audio = {m["a2l"]["file"]} | ({m["a2l"]["baseline"]} if m["a2l"].get("baseline") else set())  # a fused drive
    assert files == {"manifest.json", "generator.onnx", "phonetic.json"} | audio | listed
    assert len(listed) == 6 and "no frames of the footage beyond the reference crops" in m["enrolment"]["privacy"]
    for name in listed:  # face crops, not frames
        img = cv2.imread(str(runs.out / name))
        assert img.shape[0] == img.shape[1] <= 384
    assert not list(runs.out.parent.glob(".*"))  # nor a work folder beside it


PICKLING = ("pickle", "dill", "joblib", "cloudpickle")


def _pickle_uses(source: str) -> list[str]:
    """Imports of pickle-based modules, torch.load without weights_only=True, allow_pickle=True."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"import {n}" for n in names if n and n.split(".")[0] in PICKLING]
        elif isinstance(node, ast.Call):
            f = node.func
            name = f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            wo = kw.get("weights_only")
            safe = isinstance(wo, ast.Constant) and wo.value is True
            if name == "torch.load" and not safe:
                bad.append(f"line {node.lineno}: torch.load without weights_only=True")
            allow = kw.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                bad.append(f"line {node.lineno}: allow_pickle=True")
    return bad


def test_enrolment_loads_nothing_by_pickle() -> None:
    """Checkpoints and bundles are safetensors, ONNX, JSON, PNG and npz without pickles."""
    probe = "import pickle\nimport torch\nx = torch.load('m.pt')\ny = torch.load('m.pt', weights_only=True)\n"
    probe += "import numpy as np\nz = np.load('a.npz', allow_pickle=True)\n"
    found = _pickle_uses(probe)
    assert found == ["import pickle", "line 3: torch.load without weights_only=True", "line 6: allow_pickle=True"]
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("training/enroll*.py"), root / "engines/onnx_weights.py", root / "rtdub/cli/enroll.py"]
    files += [root / "rtdub/render/reference.py", root / "rtdub/model.py", root / "training/common.py"]
    files += [root / "training/shards.py", root / "benchmarks/enroll_eval.py"]
    assert len(files) == 9
    for f in files:
        assert _pickle_uses(f.read_text()) == [], f


def _frames_file(path: Path, frames: list[np.ndarray]) -> Path:
    return samples.write_clip(path, frames, FPS, speechlike(len(frames) / FPS))


def _bad_footage(kind: str, tmp: Path) -> Path:
    img = cv2.resize(samples.portrait(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    if kind == "no face":
        return faceless_clip(tmp / "x.mp4", seconds=2.0)
    if kind == "short":
        return _frames_file(tmp / "x.mp4", list(samples.head_motion(img, 100, FPS)))
    if kind == "two faces":
        pair = np.concatenate([img, img[:, ::-1]], axis=1)
        return _frames_file(tmp / "x.mp4", list(samples.head_motion(pair, 75, FPS)))
    small = cv2.resize(img, (120, 120), interpolation=cv2.INTER_AREA)
    canvas = np.full((360, 480, 3), 40, np.uint8)
    canvas[120:240, 180:300] = small
    return _frames_file(tmp / "x.mp4", list(samples.head_motion(canvas, 75, FPS)))


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("no face", "no face in 2.0 s"),
        ("short", "only 2.8 s of usable face"),
        ("two faces", "several faces in 3.0 s"),
        ("small face", "face smaller than 80 px in 3.0 s"),
    ],
)
def test_too_little_usable_footage_is_one_line_and_exit_2(
    kind: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = _bad_footage(kind, tmp_path)
    out = tmp_path / "me"
    assert cli_main(["enroll", "--video", str(video), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtdub: error: ") and "\n" not in err, err
    assert said in err and "(at least 10 s needed, 60 s recommended" in err, err
    assert not out.exists()


def test_without_torch_enroll_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as without the extra
    video = faceless_clip(tmp_path / "x.mp4", seconds=0.5)
    assert cli_main(["enroll", "--video", str(video), "-o", str(tmp_path / "me")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rtdub: error: rtdub enroll needs the training extra (torch): pip install 'rtdub[train]'"


def test_enroll_refuses_to_overwrite_a_folder_that_is_not_its_bundle(
    talking: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    assert cli_main(["enroll", "--video", str(talking), "-o", str(out), "-q"]) == 2
    assert "is not an enrolled bundle" in capsys.readouterr().err
    assert (out / "holiday.jpg").read_bytes() == b"x"


def test_the_rtdub_command_finds_the_checkouts_training_packages(tmp_path: Path) -> None:
    """An editable install maps only rtdub: run from elsewhere, the installed ``rtdub`` command
    must still reach training/ and engines/ (here it gets as far as the missing video)."""
    import os

    exe = Path(sys.executable).parent / "rtdub"
    if not exe.is_file():
        pytest.skip("no rtdub console script beside this interpreter")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(exe), "enroll", "--video", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "me")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "missing.mp4" in r.stderr and "source tree" not in r.stderr, r.stderr
    assert not (tmp_path / "me").exists()
