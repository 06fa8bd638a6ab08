"""The generator's seed losses (training/gen_losses.py) and their flags in training/train_gen.py:
SSIM, the spectrally normalised mouth discriminator, the expert sync loss, the stabilized sync
loss L_ss (docs/design.md §3), the focal frequency loss, the alpha (copy-the-reference) term and the
silent-lip reference generator G_S."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rtdub.measure.avsync import video_input  # noqa: E402
from rtdub.render.blend import face_mask  # noqa: E402
from training import gen_losses as gl  # noqa: E402
from training.common import save_checkpoint  # noqa: E402
from training.models import GenConfig, LipToFace  # noqa: E402
from training.syncnet import SyncConfig, SyncNet  # noqa: E402


def _images(seed: int, n: int = 2, s: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, s, s, generator=g)


# --- SSIM ---------------------------------------------------------------------------------
def test_ssim_is_one_for_identical_images_and_drops_with_noise() -> None:
    a = _images(0)
    assert gl.ssim_map(a, a).shape == a.shape
    assert gl.ssim_loss(a, a).item() == pytest.approx(0.0, abs=1e-5)
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    more = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    assert 0 < gl.ssim_loss(noisy, a).item() < gl.ssim_loss(more, a).item() <= 2


def test_ssim_weight_restricts_the_comparison() -> None:
    a = _images(1)
    b = a.clone()
    b[..., :16, :] = torch.rand_like(b[..., :16, :])  # top half differs
    w = torch.zeros(1, 1, 32, 32)
    w[..., 24:, :] = 1  # only look at the bottom quarter, far from the change
    assert gl.ssim_loss(b, a, w).item() == pytest.approx(0.0, abs=1e-4)
    assert gl.ssim_loss(b, a).item() > 0.1


def test_ssim_gradient_reaches_the_prediction() -> None:
    a = _images(2)
    x = _images(3).requires_grad_(True)
    gl.ssim_loss(x, a).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- focal frequency loss ------------------------------------------------------------------
def _wave(fy: int, fx: int, s: int = 16) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (fy * y + fx * x) / s)


def test_focal_frequency_loss_at_alpha_zero_is_the_mean_squared_error() -> None:
    """Uniform weights: by Parseval (orthonormal DFT) it is the pixel MSE."""
    a, b = _images(4), _images(5)
    mse = ((a - b) ** 2).mean().item()
    assert gl.focal_frequency_loss(a, b, alpha=0.0).item() == pytest.approx(mse, rel=1e-5)
    assert gl.focal_frequency_loss(a, a).item() == 0.0


def test_focal_frequency_loss_weights_each_frequency_by_its_own_error() -> None:
    """Error = A·(low wave) + a·(high wave). The low wave's spectral peaks weigh 1, the high
    wave's a/A: L = A²/2 + (a/A)·a²/2, against the MSE's A²/2 + a²/2."""
    big, small = 0.5, 0.1
    err = big * _wave(1, 0) + small * _wave(5, 7)
    target = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    got = gl.focal_frequency_loss(err[None, None], target).item()
    assert got == pytest.approx(big**2 / 2 + (small / big) * small**2 / 2, rel=1e-6)
    # the weights are per image: the same error in a second image with a third of the
    # amplitude costs a ninth, not a weight relative to the first image's peak
    two = torch.stack([err, err / 3])[:, None]
    assert gl.focal_frequency_loss(two, torch.zeros_like(two)).item() == pytest.approx(got * (1 + 1 / 9) / 2, rel=1e-6)


def test_focal_frequency_loss_gradient_reaches_the_prediction() -> None:
    a = _images(6)
    x = _images(7).requires_grad_(True)
    gl.focal_frequency_loss(x, a).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- discriminator ------------------------------------------------------------------------
def test_patch_discriminator_shape_spectral_norm_and_gradients() -> None:
    x0, y0, x1, y1 = face_mask(96).bbox
    d = gl.PatchDiscriminator(width=8)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    for c in convs:  # torch.nn.utils.spectral_norm keeps weight_orig and u
        assert hasattr(c, "weight_orig") and hasattr(c, "weight_u")
    x = torch.rand(3, 3, y1 - y0, x1 - x0, requires_grad=True)
    out = d(x)
    assert out.shape[:2] == (3, 1) and out.shape[2] >= 2 and out.shape[3] >= 2  # one logit per patch
    gl.hinge_g_loss(out).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(c.weight_orig.grad is not None for c in convs)


def test_spectral_norm_bounds_the_largest_singular_value() -> None:
    d = gl.PatchDiscriminator(width=8)
    d.train()
    # power iterations run in training-mode forwards; 20 left 2 of 60 random initialisations
    # 0.06 off (close top singular values converge slowly), 100 leave every one within 0.006
    for _ in range(100):
        d(torch.rand(1, 3, 44, 60))
    for c in (m for m in d.modules() if isinstance(m, torch.nn.Conv2d)):
        w = c.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_hinge_losses() -> None:
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert gl.hinge_d_loss(real, fake).item() == 0.0  # both beyond the margin
    assert gl.hinge_d_loss(fake, real).item() == pytest.approx(6.0)
    assert gl.hinge_g_loss(fake).item() == pytest.approx(2.0)


# --- sync losses --------------------------------------------------------------------------
def test_sync_bce_is_minus_log_p() -> None:
    p = torch.tensor([1.0, 0.5, 0.25], requires_grad=True)
    loss = gl.sync_bce(p)
    assert loss.item() == pytest.approx((0 + math.log(2) + math.log(4)) / 3, rel=1e-5)
    loss.backward()
    assert p.grad is not None and (p.grad < 0).all()  # higher P_sync lowers the loss


def test_stabilized_sync_loss_definition_on_toy_values() -> None:
    eps = 1e-3
    y, d = torch.tensor([0.6]), torch.tensor([0.2])

    def lss(x: float) -> float:
        return gl.stabilized_sync_loss(torch.tensor([x]), y, d, eps).item()

    def formula(x: float) -> float:  # docs/design.md §3, written out
        r = (abs(x - 0.6) + eps) / (abs(x - 0.6) + abs(0.6 - 0.2) + eps)
        return -math.log(1 - r)

    for x in (0.6, 0.5, 0.2, 0.9, 0.0):
        assert lss(x) == pytest.approx(formula(x), rel=1e-4)
    assert lss(0.6) == pytest.approx(-math.log(1 - eps / (0.4 + eps)), rel=1e-4)  # ≈ 0 at the ground truth
    assert lss(0.2) == pytest.approx(math.log(2), rel=1e-2)  # like the identity reference: log 2
    # symmetric around y: scoring above the ground truth is penalised like scoring below it
    assert lss(0.8) == pytest.approx(lss(0.4), rel=1e-5)
    assert lss(0.6) < lss(0.5) < lss(0.3) < lss(0.0)


def test_stabilized_sync_loss_gradient_pulls_x_towards_y_only() -> None:
    y = torch.tensor([0.6, 0.6], requires_grad=True)
    d = torch.tensor([0.2, 0.2], requires_grad=True)
    x = torch.tensor([0.3, 0.9], requires_grad=True)
    gl.stabilized_sync_loss(x, y, d).backward()
    assert x.grad is not None
    assert x.grad[0] < 0 < x.grad[1]  # below y: raise x; above y: lower it
    assert y.grad is None and d.grad is None  # the targets are constants


def _expert(tmp: Path | None = None) -> gl.SyncExpert:
    torch.manual_seed(0)
    cfg = SyncConfig(width=8, embed=32)
    model = SyncNet(cfg)
    if tmp is not None:
        opt = torch.optim.Adam(model.parameters())
        save_checkpoint(tmp, model, opt, {"step": 0, "config": cfg.to_dict()})
        return gl.load_expert(tmp)
    return gl.SyncExpert(model)


def test_expert_video_input_matches_the_runtime_layout() -> None:
    rng = np.random.default_rng(0)
    win = rng.integers(0, 256, size=(2, 5, 96, 96, 3), dtype=np.uint8)
    t = torch.from_numpy(win).float().div(255).movedim(-1, -3)  # (B, F, 3, S, S)
    np.testing.assert_allclose(gl.expert_video_input(t).numpy(), video_input(win), atol=1e-6)


def test_sync_loss_gradient_reaches_the_generator_not_the_expert(tmp_path: Path) -> None:
    expert = _expert(tmp_path / "expert")
    expert.train()  # stays in eval mode: frozen BatchNorm statistics
    assert not expert.model.training
    gen = LipToFace(GenConfig(base=8))
    # the zero-initialised head makes the output independent of most weights at first
    torch.nn.init.normal_(gen.head.weight, std=0.01)
    b, f = 2, expert.cfg.frames
    pose, ref = torch.rand(b * f, 3, 96, 96), torch.rand(b * f, 3, 96, 96)
    units = torch.randn(b * f, 5, 9)
    frames = gen(pose, ref, units).unflatten(0, (b, f))
    a = expert.audio(torch.randn(b, 16, 80))
    x = expert.avsim(frames, a)
    assert x.shape == (b,) and ((x > 0) & (x <= 1)).all()
    y = expert.avsim(torch.rand(b, f, 3, 96, 96), a).detach()
    d = expert.avsim(ref[:b, None].expand(-1, f, -1, -1, -1), a).detach()
    (gl.sync_bce(x) + gl.stabilized_sync_loss(x, y, d)).backward()
    assert gen.head.weight.grad is not None and gen.head.weight.grad.abs().sum() > 0
    assert gen.units_mlp[0].weight.grad is not None  # through the units: the whole chain
    assert all(p.grad is None for p in expert.parameters())


def test_load_expert_rejects_a_missing_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        gl.load_expert(tmp_path / "nothing")


# --- G_S and the training flags -----------------------------------------------------------
def test_silent_reference_uses_closed_units_and_no_gradient() -> None:
    from training.train_gen import silent_reference

    torch.manual_seed(0)
    gs = LipToFace(GenConfig(base=8))
    torch.nn.init.normal_(gs.head.weight, std=0.05)
    for film in gs.film:  # zero-initialised: the units would not matter yet
        torch.nn.init.normal_(film.lin.weight, std=0.2)
    gs.eval()
    ref = torch.rand(3, 3, 96, 96)
    closed = torch.zeros(1, 5, 9)
    out = silent_reference(gs, ref, closed)
    assert out.shape == ref.shape and not out.requires_grad
    with torch.no_grad():
        hidden = torch.from_numpy(face_mask(96).hidden.astype(np.float32))
        want = gs(ref * (1 - hidden), ref, closed.expand(3, -1, -1))
        other = gs(ref * (1 - hidden), ref, torch.full((3, 5, 9), 3.0))
    torch.testing.assert_close(out, want)
    assert (out - other).abs().max() > 1e-4  # the units matter: the closed mouth is asked for


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training import prepare

    from .factories import speechlike, talking_clip

    root = tmp_path_factory.mktemp("genloss")
    src = root / "src"
    src.mkdir()
    for i in range(2):
        talking_clip(src / f"clip{i}.mp4", seconds=2.4, audio=speechlike(2.4, seed=i))
    out = root / "shards"
    assert prepare.main([str(src), str(out), "--workers", "1"]) == 0
    return out


def test_train_gen_with_every_seed_loss(shards: Path, tmp_path: Path) -> None:
    from training import train_gen

    expert = tmp_path / "expert"
    _expert(expert)
    common = ["--data", str(shards), "--dev", str(shards), "--threads", "1", "--batch", "2", "--base", "8"]
    plain = tmp_path / "plain"
    assert train_gen.main([*common, "--out", str(plain), "--steps", "1"]) == 0
    run = tmp_path / "run"
    argv = [
        *common,
        *("--out", str(run), "--steps", "2", "--init", str(plain), "--silent-ref", str(plain)),
        *("--ssim-weight", "0.1", "--gan-weight", "0.05", "--sync-weight", "0.03", "--ss-weight", "0.03"),
        *("--freq-weight", "10", "--alpha-weight", "0.3"),
        *("--expert", str(expert), "--sync-batch", "2"),
    ]
    assert train_gen.main(argv) == 0
    meta = json.loads((run / "meta.json").read_text())
    assert meta["step"] == 2
    assert meta["recipe"]["ss_weight"] == 0.03 and meta["recipe"]["silent_ref"] == str(plain)
    assert meta["recipe"]["freq_weight"] == 10 and meta["recipe"]["alpha_weight"] == 0.3
    assert (run / "disc.safetensors").is_file()
    # the fine-tune started from --init and moved away from it
    from safetensors.torch import load_file

    a, b = load_file(str(plain / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_train_gen_alpha_weight_makes_the_generator_copy_the_reference(shards: Path, tmp_path: Path) -> None:
    """--alpha-weight: two fine-tunes from the same weights, seed and batches; the one with the
    term ends with a higher mixing weight over the mouth mask."""
    from training import train_gen
    from training.common import load_checkpoint
    from training.data import attach_units, fit_basis, load_dir

    common = ["--data", str(shards), "--dev", str(shards), "--threads", "1", "--batch", "2", "--base", "8"]
    start = tmp_path / "start"
    assert train_gen.main([*common, "--out", str(start), "--steps", "1"]) == 0
    # the fine-tune takes its width from --init (base 8 here, not the default 16)
    tune = [*common[:-2], "--init", str(start), "--steps", "20", "--lr", "1e-2"]
    plain, copying = tmp_path / "plain", tmp_path / "copying"
    assert train_gen.main([*tune, "--out", str(plain)]) == 0
    assert train_gen.main([*tune, "--out", str(copying), "--alpha-weight", "5"]) == 0

    clips = load_dir(shards)
    attach_units(clips, fit_basis(clips))
    cfg = GenConfig(size=96, units=9, base=8)
    w = np.array([c.valid.sum() for c in clips], np.float64)
    pose, ref, units, _ = train_gen.make_batch(clips, w / w.sum(), 8, cfg, np.random.default_rng(5), aug=False)
    soft = torch.from_numpy(face_mask(96).soft.copy())[None, None]
    alpha = {}
    for run in (start, plain, copying):
        m = LipToFace(cfg)
        load_checkpoint(run, m)
        m.eval()
        with torch.no_grad():
            a = m.fields(pose, ref, units)[:, 2:3]
        alpha[run.name] = float((a * soft).sum() / soft.expand_as(a).sum())
    assert alpha["copying"] > alpha["plain"] + 0.01, alpha
    assert alpha["copying"] > alpha["start"], alpha
    # a width that is not --init's is a one-line usage error
    with pytest.raises(SystemExit) as e:
        train_gen.main([*common[:-2], "--base", "12", "--init", str(start), "--out", str(tmp_path / "x")])
    assert e.value.code == 2


def test_train_gen_sync_units_from_the_audio_stage(shards: Path, tmp_path: Path) -> None:
    from training import train_a2l, train_gen

    expert, a2l = tmp_path / "expert", tmp_path / "a2l"
    _expert(expert)
    common = ["--data", str(shards), "--dev", str(shards), "--threads", "1"]
    assert train_a2l.main([*common, "--out", str(a2l), "--steps", "1", "--batch", "4"]) == 0
    argv = [*common, "--out", str(tmp_path / "g"), "--steps", "1", "--batch", "2", "--base", "8"]
    argv += ["--sync-weight", "0.1", "--expert", str(expert), "--sync-units", "a2l", "--a2l", str(a2l)]
    assert train_gen.main(argv) == 0


def test_train_gen_distils_from_a_wider_teacher(shards: Path, tmp_path: Path) -> None:
    """--teacher: the student is pulled towards the frozen teacher's faces. Two students from
    the same seed and batches, with and without the teacher; the distilled one ends closer."""
    from training import train_gen
    from training.common import load_checkpoint
    from training.data import attach_units, fit_basis, load_dir

    common = ["--data", str(shards), "--dev", str(shards), "--threads", "1", "--batch", "2", "--lr", "3e-3"]
    teacher = tmp_path / "teacher"
    assert train_gen.main([*common, "--out", str(teacher), "--steps", "3", "--base", "12"]) == 0
    alone, taught = tmp_path / "alone", tmp_path / "taught"
    student = [*common, "--steps", "6", "--base", "8", "--seed", "1"]
    assert train_gen.main([*student, "--out", str(alone)]) == 0
    assert train_gen.main([*student, "--out", str(taught), "--teacher", str(teacher), "--kd-weight", "20"]) == 0
    meta = json.loads((taught / "meta.json").read_text())
    assert meta["recipe"]["teacher"] == str(teacher) and meta["recipe"]["kd_weight"] == 20

    clips = load_dir(shards)
    attach_units(clips, fit_basis(clips))
    cfg = GenConfig(size=96, units=9, base=8)
    w = np.array([c.valid.sum() for c in clips], np.float64)
    pose, ref, units, _ = train_gen.make_batch(clips, w / w.sum(), 8, cfg, np.random.default_rng(5), aug=False)
    t_model = train_gen.load_teacher(teacher, cfg)
    dist = {}
    with torch.no_grad():
        t_out = t_model(pose, ref, units)
        for run in (alone, taught):
            m = LipToFace(cfg)
            load_checkpoint(run, m)
            m.eval()
            dist[run.name] = float((m(pose, ref, units) - t_out).abs().mean())
    assert dist["taught"] < 0.8 * dist["alone"], dist


def test_face_loss_is_zero_only_on_the_target() -> None:
    from training.train_gen import face_loss

    soft = torch.from_numpy(face_mask(96).soft.copy())[None, None]
    x = torch.rand(2, 3, 96, 96)
    assert float(face_loss(x, x, 1 + 4 * soft, soft)) == 0.0
    assert float(face_loss(x, x.flip(-1), 1 + 4 * soft, soft)) > 0.01


@pytest.mark.parametrize(
    "bad",
    [
        ["--ss-weight", "-1"],
        ["--kd-weight", "-1"],
        ["--teacher", "/nonexistent/run"],
        ["--init", "/nonexistent/run"],
        ["--silent-ref", "/nonexistent/run"],
        ["--sync-weight", "0.1", "--expert", "/nonexistent/run"],
    ],
)
def test_train_gen_rejects_bad_flags(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from training import train_gen

    with pytest.raises(SystemExit) as e:
        train_gen.main(["--data", "x", *bad])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- the ablation table ---------------------------------------------------------------------
def _fake_eval(run: Path, lmd: float, clips: tuple[str, ...]) -> None:
    scores = {"LMD": lmd, "MOC": 0.5, "PSNR": 25.0, "SSIM": 0.8, "sharpness": 0.2}
    rec = {c: {m: dict(scores) for m in ("model", "true-units", "frozen")} for c in clips}
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "eval.json").write_text(json.dumps({"reconstruction": rec}))
    (run / "meta.json").write_text(json.dumps({"dev": {"masked_l1": 0.06, "sharpness_ratio_crop": 0.5}}))


def test_ablation_table_averages_the_common_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training import ablation_table

    _fake_eval(tmp_path / "a", 2.0, ("speaker_a", "speaker_b"))
    _fake_eval(tmp_path / "b", 3.0, ("speaker_a",))
    assert ablation_table.main([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]) == 0
    out = capsys.readouterr().out
    assert "clips: speaker_a\n" in out
    assert "| a | model | 2.000 |" in out and "| b | true-units | 3.000 |" in out
    assert ablation_table.main([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--clips", "speaker_b"]) == 2
    assert ablation_table.main(["nonsense"]) == 2
    assert ablation_table.main([f"c={tmp_path / 'missing'}"]) == 2


def test_ablation_table_over_seeds_gives_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training import ablation_table

    for name, lmd in (("a0", 2.0), ("a1", 3.0), ("a2", 4.0), ("b0", 1.5)):
        _fake_eval(tmp_path / name, lmd, ("speaker_a", "speaker_b"))
    runs = ",".join(str(tmp_path / n) for n in ("a0", "a1", "a2"))
    assert ablation_table.main([f"a={runs}", f"b={tmp_path / 'b0'}"]) == 0
    out = capsys.readouterr().out
    assert "| a | 3 | model | 3.000 ± 1.000 |" in out  # sample std of 2, 3, 4
    assert "| b | 1 | true-units | 1.500 |" in out
    assert ablation_table.main([f"a={runs},"]) == 2  # an empty run name
