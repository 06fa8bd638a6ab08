"""The one engine configuration: its presets, its validation (errors name the flag), and the
engine flags every engine command gets from rtdub.cli.options with its preset's defaults."""

from __future__ import annotations

import argparse
import math

import pytest

from rtdub.cli.main import build_parser, main
from rtdub.defaults import DEFAULT_DETAIL, DEFAULT_LOOKAHEAD_MS, STREAM_DETAIL
from rtdub.engine import EngineConfig
from rtdub.exceptions import InputError


def test_presets() -> None:
    off, live = EngineConfig.offline(), EngineConfig.stream()
    assert (off.threads, off.kernel, off.detail) == (2, "lanczos", DEFAULT_DETAIL)
    assert (live.threads, live.kernel, live.detail) == (1, "cubic", STREAM_DETAIL)
    for c in (off, live):
        assert c.backend == "onnx" and c.model is None and c.render_size == 0
        assert c.lookahead_ms == DEFAULT_LOOKAHEAD_MS
        c.check()


def test_with_options_changes_only_what_is_given() -> None:
    base = EngineConfig.stream()
    c = base.with_options(render_size=192, reference_opening=0.0)
    assert (c.render_size, c.reference_opening) == (192, 0.0)
    assert (c.kernel, c.detail, c.lookahead_ms, c.threads) == (base.kernel, base.detail, base.lookahead_ms, 1)


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"threads": 0}, "--threads"),
        ({"threads": -3}, "--threads"),
        ({"backend": "cuda-magic"}, "--backend"),
    ],
)
def test_check_names_the_flag(change: dict[str, object], flag: str) -> None:
    import dataclasses

    config = dataclasses.replace(EngineConfig.offline(), **change)  # type: ignore[arg-type]
    with pytest.raises(InputError) as err:
        config.check()
    assert err.value.path == flag


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"lookahead_ms": math.nan}, "--lookahead-ms"),
        ({"lookahead_ms": math.inf}, "--lookahead-ms"),
        ({"lookahead_ms": -1.0}, "--lookahead-ms"),
        ({"render_size": -1}, "--render-size"),
        ({"kernel": "nearest"}, "--kernel"),
        ({"detail": 1.5}, "--detail"),
        ({"reference_opening": math.nan}, "--reference-opening"),
        ({"reference_opening": 2.0}, "--reference-opening"),
    ],
)
def test_check_pipeline_settings(options: dict[str, float], flag: str) -> None:
    with pytest.raises(InputError) as err:
        EngineConfig.offline().with_options(**options)  # type: ignore[arg-type]
    assert err.value.path == flag


def test_render_size_checked_against_the_bundle() -> None:
    config = EngineConfig.offline().with_options(render_size=50)
    config.check()  # no bundle: only the sign is known
    with pytest.raises(InputError, match="crop size"):
        config.check(crop_size=96)


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError("no subcommands")


@pytest.mark.parametrize(("command", "preset"), [("dub", EngineConfig.offline()), ("serve", EngineConfig.stream())])
def test_engine_flags_default_to_the_preset(command: str, preset: EngineConfig) -> None:
    p = _subcommand(command)
    required = {"dub": ["--video", "v", "--audio", "a", "-o", "o"], "serve": []}[command]
    args = p.parse_args(required)
    assert (args.threads, args.kernel, args.detail) == (preset.threads, preset.kernel, preset.detail)
    assert (args.lookahead_ms, args.render_size, args.backend) == (preset.lookahead_ms, 0, "onnx")
    assert args.reference_opening == preset.reference_opening


@pytest.mark.parametrize("command", ["dub", "serve", "join", "camera"])
def test_every_engine_command_has_the_engine_flags(command: str) -> None:
    flags = {s for a in _subcommand(command)._actions for s in a.option_strings}
    engine = {"--model", "--backend", "--threads", "--lookahead-ms", "--render-size", "--kernel", "--detail"}
    assert engine | {"--reference-opening"} <= flags


@pytest.mark.parametrize(
    ("flag", "value"), [("--lookahead-ms", "nan"), ("--threads", "0"), ("--threads", "-2"), ("--backend", "x")]
)
def test_dub_refuses_bad_engine_flags(
    flag: str, value: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dub", "--video", "missing.mp4", "--audio", "missing.wav", "-o", "out.mp4", flag, value])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"rtdub: error: {flag}:") and "\n" not in err
