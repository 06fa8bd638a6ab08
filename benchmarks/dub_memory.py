"""Peak memory and temporary disk of ``rtdub dub`` on generated 1080p and 4K clips.

    python -m benchmarks.dub_memory [--sizes 1080p,4k] [--video-seconds 4] [--audio-seconds 10]
                                    [--audio-rate 16000] [--audio-channels 1]
                                    [--fps 30] [--keyint 250] [--out benchmarks/results]

For each size it generates a talking clip (the portrait under gentle head motion, scaled to
the frame height and centred) of ``--video-seconds`` and speech-like audio of
``--audio-seconds`` (longer than the video, so the output ping-pongs over it: the case in
which the frame spool is used; a WAV of ``--audio-rate`` Hz and ``--audio-channels``, which
the output muxes as they are), then runs the real command, ``python -m rtdub dub``, as a
child process with ``TMPDIR`` set to a fresh folder. While it runs the folder's disk usage
(allocated blocks, so sparse files count what they hold) is sampled every 50 ms; at the end
the child's peak resident set comes from ``os.wait4`` (its own rusage, ``ru_maxrss``).
Writes ``dub_memory.json`` and ``dub_memory.md`` in ``--out``. Targets: peak RSS and peak
temporary disk at most 1 GB each, at any length, up to 4K.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from rtdub import atomic, media
from rtdub.measure import samples

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
TARGET_MB = 1024.0


@dataclass(frozen=True)
class Run:
    size: str
    width: int
    height: int
    video_seconds: float
    audio_seconds: float
    fps: float
    exit_code: int
    wall_s: float
    peak_rss_mb: float
    peak_tmp_mb: float
    tmp_left_mb: float  # what the run left in its TMPDIR (should be 0)
    frame_mb: float  # one decoded RGB frame
    output_frames: int
    audio_rate: int = 16000  # the dubbed audio's
    audio_channels: int = 1


def speechlike(seconds: float, sr: int = 16000) -> np.ndarray:
    """A syllable-rate modulated harmonic tone with pauses: speech enough for the lip stage."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / sr
    env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2 * (np.sin(2 * np.pi * 0.5 * t) > -0.6)
    return (0.1 * env * sum(np.sin(k * phase) / k for k in range(1, 8))).astype(np.float32)


def write_speech(path: Path, seconds: float, rate: int, channels: int, block_s: float = 10.0) -> Path:
    """Speech-like audio as a 16-bit WAV of ``rate`` Hz and ``channels``, made ``block_s`` at a
    time (the phase in closed form), so that long high-rate audio is never held whole here."""
    layout = "mono" if channels == 1 else "stereo"
    n = int(seconds * rate)
    with av.open(str(path), "w", format="wav") as c:
        s: av.AudioStream = c.add_stream("pcm_s16le", rate=rate)
        s.layout = layout
        step = int(block_s * rate)
        for k0 in range(0, n, step):
            t = (k0 + np.arange(min(step, n - k0))) / rate
            phase = 2 * np.pi * (140 * t - 20 / (2 * np.pi * 0.7) * np.cos(2 * np.pi * 0.7 * t))
            env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2 * (np.sin(2 * np.pi * 0.5 * t) > -0.6)
            x = 0.1 * env * sum(np.sin(k * phase) / k for k in range(1, 8))
            pcm = np.repeat((np.clip(x, -1, 1) * 32767).astype(np.int16)[None], channels, axis=0)
            f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1, order="F"), format="s16", layout=layout)
            f.sample_rate, f.pts, f.time_base = rate, k0, Fraction(1, rate)
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def make_clip(path: Path, width: int, height: int, seconds: float, fps: float, keyint: int) -> Path:
    """The portrait scaled to the frame height, centred on a grey canvas, under head motion."""
    face = cv2.resize(samples.portrait(), (height, height), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((height, width, 3), 96, np.uint8)
    x0 = (width - height) // 2
    n = max(1, round(seconds * fps))
    rate = Fraction(fps).limit_denominator(1001)
    with media.VideoWriter(path, rate, width, height, preset="ultrafast", keyint=keyint) as w:
        for img in samples.head_motion(face, n, fps, amplitude=0.5):
            canvas[:, x0 : x0 + height] = img
            w.write(canvas)
    return path


def _usage(folder: Path, pid: int | None = None) -> int:
    """Bytes allocated under ``folder``, with the files ``pid`` holds open there after
    unlinking them (the frame spool is such a file: it has no name to walk to)."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(st: os.stat_result) -> None:
        nonlocal total
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512

    for root, _dirs, files in os.walk(folder):
        for f in files:
            try:
                add(os.lstat(os.path.join(root, f)))
            except OSError:
                pass
    if pid is not None:
        fds = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fds)
        except OSError:
            names = []
        for fd in names:
            try:
                if os.readlink(os.path.join(fds, fd)).startswith(str(folder) + "/"):
                    add(os.stat(os.path.join(fds, fd)))
            except OSError:
                pass
    return total


def run_dub(video: Path, audio: Path, out: Path, tmp: Path, spool_mb: float | None) -> tuple[int, float, float, float]:
    """(exit code, wall s, peak RSS MB of the child, peak TMPDIR usage MB)."""
    env = {**os.environ, "TMPDIR": str(tmp.resolve())}
    if spool_mb is not None:
        env["RTDUB_SPOOL_MB"] = f"{spool_mb:g}"
    cmd = [sys.executable, "-m", "rtdub", "dub", "--video", str(video), "--audio", str(audio), "-o", str(out), "-q"]
    peak = [0]
    done = threading.Event()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _usage(tmp.resolve(), child.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    _pid, status, rusage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    return child.returncode, wall, rusage.ru_maxrss / 1024, peak[0] / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--sizes", default="1080p,4k", help=f"comma list of {','.join(SIZES)}")
    p.add_argument("--video-seconds", type=float, default=4.0)
    p.add_argument("--audio-seconds", type=float, default=10.0)
    p.add_argument("--audio-rate", type=int, default=16000, help="the dubbed audio's sample rate (Hz)")
    p.add_argument("--audio-channels", type=int, choices=(1, 2), default=1)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--keyint", type=int, default=250, help="GOP length of the generated clips (x264's default)")
    p.add_argument(
        "--spool-mb", type=float, default=None,
        help="the frame spool's budget (RTDUB_SPOOL_MB; default rtdub.dub.SPOOL_BYTES): small, it forces re-decoding",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work", type=Path, default=None, help="folder for the clips (default: a temporary one)")
    args = p.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    if bad := [s for s in sizes if s not in SIZES]:
        print(f"dub_memory: error: unknown size {bad[0]!r}; choose from {', '.join(SIZES)}", file=sys.stderr)
        return 2
    if args.video_seconds <= 0 or args.audio_seconds <= 0 or args.fps <= 0 or args.keyint < 1:
        print("dub_memory: error: --video-seconds, --audio-seconds, --fps and --keyint must be > 0", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rtdub-dubmem-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    try:
        if args.audio_rate == 16000 and args.audio_channels == 1:
            audio = media.write_wav(work / "speech.wav", speechlike(args.audio_seconds), 16000)
        else:
            audio = write_speech(
                work / f"speech_{args.audio_rate}_{args.audio_channels}.wav",
                args.audio_seconds, args.audio_rate, args.audio_channels,
            )  # fmt: skip
        for name in sizes:
            w, h = SIZES[name]
            t0 = time.perf_counter()
            clip = make_clip(work / f"clip_{name}.mp4", w, h, args.video_seconds, args.fps, args.keyint)
            print(f"[{name}] clip {args.video_seconds:g} s made in {time.perf_counter() - t0:.1f} s", flush=True)
            tmp = work / f"tmp_{name}"
            tmp.mkdir()
            out = work / f"dubbed_{name}.mp4"
            code, wall, rss, tmp_peak = run_dub(clip, audio, out, tmp, args.spool_mb)
            left = _usage(tmp) / 2**20
            n_out = sum(1 for _ in media.iter_frames(out)) if code == 0 else 0
            out.unlink(missing_ok=True)
            runs.append(
                Run(name, w, h, args.video_seconds, args.audio_seconds, args.fps, code, round(wall, 1),
                    round(rss, 1), round(tmp_peak, 1), round(left, 1), round(w * h * 3 / 2**20, 1), n_out,
                    args.audio_rate, args.audio_channels)
            )  # fmt: skip
            print(f"[{name}] {json.dumps(asdict(runs[-1]))}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "command": "python -m benchmarks.dub_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "target_mb": TARGET_MB,
        "runs": [asdict(r) for r in runs],
    }
    atomic.write_text(args.out / "dub_memory.json", json.dumps(report, indent=1) + "\n")
    rows = [
        f"| {r.size} | {r.video_seconds:g} | {r.audio_seconds:g} | {r.audio_rate / 1000:g} kHz × {r.audio_channels} "
        f"| {r.frame_mb} | {r.peak_rss_mb} | "
        f"{r.peak_tmp_mb} | {r.tmp_left_mb} | {r.wall_s} | {r.exit_code} |"
        for r in runs
    ]
    md = "\n".join(
        [
            "# rtdub dub: peak memory and temporary disk",
            "",
            f"- command: `{report['command']}`; {report['created']}; load average {report['load_average_start']}",
            f"- target: peak RSS and peak temporary disk at most {TARGET_MB:g} MB each, at any length, up to 4K",
            "",
            "| size | video s | audio s | audio | frame MB | peak RSS MB | peak TMPDIR MB | TMPDIR left MB "
            "| wall s | exit |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    atomic.write_text(args.out / "dub_memory.md", md)
    print(md)
    ok = all(r.exit_code == 0 and r.peak_rss_mb <= TARGET_MB and r.peak_tmp_mb <= TARGET_MB for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
