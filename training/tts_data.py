"""Phoneme-labelled synthetic speech for pretraining the audio side (espeak-ng + augmentation).

    python -m training.tts_data --out data2/tts --minutes 40 --seed 0

Writes shards ``OUT/tts_NNNN.npz`` of about ``--shard-seconds`` each (resumable: existing
shards are kept). A shard is a chain of scenes; a scene is a few utterances of one espeak
voice (language x variant x pitch x rate) joined by pauses, then augmented as a whole:
reverberation (a synthetic exponentially decaying room response), band limiting, additive
noise (white, pink or brown) at 5-30 dB SNR and a lossy codec round trip (Opus, AAC or MP3
through PyAV, re-aligned to the input by cross-correlation). The text is pseudo-words built
from each language's spelling (espeak's letter-to-sound rules give them that language's
phonotactics) mixed with a few real sentences.

Shard contents: ``wav`` (int16, 16 kHz), ``phone`` (int16 per mel frame, 80 per second: the
espeak phoneme sounding at the frame centre, as an index into ``symbols``), ``symbols``
(the shard's phoneme mnemonics, index 0 is the pause "_") and ``scenes`` (JSON: voice and
augmentation per scene): the format of training/phones.py, which also reads the shards back
(``load_shards``) and maps a mnemonic to a visual class (``viseme_class``: bilabial closure,
open vowel, rounded, ...), so classes can change without regenerating.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from rtdub import audio, tts

from .phones import frame_labels, save_shard

logger = logging.getLogger("training.tts_data")

SR = audio.SAMPLE_RATE
MEL_HOP = audio.HOP

# --- text --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lang:
    voice: str
    onsets: tuple[str, ...]
    vowels: tuple[str, ...]
    codas: tuple[str, ...]
    sentences: tuple[str, ...]


_ON = ("b", "p", "m", "f", "v", "t", "d", "n", "l", "r", "s", "k", "g", "h", "", "", "")
LANGS: tuple[Lang, ...] = (
    Lang(
        "en",
        _ON + ("w", "th", "sh", "ch", "j", "pl", "br", "st", "tr", "gr", "wh", "y", "bl", "sp"),
        ("a", "e", "i", "o", "u", "ee", "oo", "ou", "ay", "oa", "igh", "ow", "ar", "or", "er"),
        ("", "", "", "n", "t", "m", "p", "b", "ng", "st", "ck", "ll", "s", "th", "mp", "ve"),
        (
            "The quick brown fox jumps over the lazy dog.",
            "Please pass me the big blue bowl of plums.",
            "We were walking home when it started to rain.",
            "My mother made a marvellous apple pie yesterday.",
            "Why would anyone buy a boat in the middle of winter?",
        ),
    ),
    Lang(
        "en-us",
        _ON + ("w", "th", "sh", "ch", "j", "fl", "pr", "sm", "cr", "y"),
        ("a", "e", "i", "o", "u", "ee", "oo", "ou", "ai", "oy", "aw", "ir"),
        ("", "", "n", "t", "m", "p", "b", "ng", "sh", "ld", "s", "x"),
        (
            "Bob bought a bottle of bubbly for the party.",
            "I think we should meet at the museum around noon.",
            "She sells sea shells by the sea shore.",
        ),
    ),
    Lang(
        "de",
        _ON + ("w", "sch", "pf", "z", "st", "sp", "kn", "bl", "gr", "j", "ch"),
        ("a", "e", "i", "o", "u", "ä", "ö", "ü", "ei", "au", "eu", "ie", "aa", "oo"),
        ("", "", "n", "t", "m", "ch", "s", "ß", "ng", "pf", "tz", "r", "l", "b"),
        (
            "Der Bäcker backt jeden Morgen frisches Brot.",
            "Wir fahren morgen mit dem Zug nach München.",
            "Meine Mutter mag Pflaumen und Birnen.",
            "Können Sie mir bitte den Weg zum Bahnhof zeigen?",
        ),
    ),
    Lang(
        "fr",
        _ON + ("ch", "j", "gn", "pl", "br", "tr", "qu", "ou", "vr"),
        ("a", "e", "i", "o", "u", "é", "è", "ou", "eau", "an", "on", "in", "oi", "eu", "ai"),
        ("", "", "", "", "n", "r", "l", "s", "m", "que", "tte", "be"),
        (
            "Le petit prince regardait le coucher du soleil.",
            "Ma mère prépare une bonne soupe aux poireaux.",
            "Nous partirons demain matin de bonne heure.",
            "Pourquoi est-ce que tu ne viens pas avec nous?",
        ),
    ),
    Lang(
        "es",
        _ON + ("ll", "ñ", "ch", "j", "rr", "pl", "br", "tr", "gu", "qu", "z"),
        ("a", "e", "i", "o", "u", "ue", "ie", "ai", "au", "io"),
        ("", "", "", "n", "s", "r", "l", "d", "z"),
        (
            "Mi abuela prepara una paella maravillosa los domingos.",
            "Buenos días, ¿puedo pagar con tarjeta?",
            "El perro de Pablo come pan por la mañana.",
        ),
    ),
    Lang(
        "it",
        _ON + ("gli", "gn", "ch", "ci", "z", "pp", "bb", "mm", "tt", "ss", "st", "pr"),
        ("a", "e", "i", "o", "u", "ie", "uo", "ai", "au"),
        ("", "", "", "", "n", "r", "l"),
        (
            "Mamma mia, che bella giornata per una passeggiata.",
            "Il bambino mangia una mela rossa.",
            "Domani porterò il mio babbo al mare.",
        ),
    ),
    Lang(
        "pt-br",
        _ON + ("lh", "nh", "ch", "j", "pr", "br", "qu"),
        ("a", "e", "i", "o", "u", "ã", "õ", "ão", "ei", "ou", "é", "ô"),
        ("", "", "", "m", "s", "r", "l"),
        ("O menino bebeu um copo de leite morno.", "Bom dia, meu amigo, tudo bem com você?"),
    ),
    Lang(
        "nl",
        _ON + ("w", "sch", "z", "j", "ch", "bl", "pr"),
        ("a", "e", "i", "o", "u", "aa", "ee", "oo", "uu", "ij", "ui", "oe", "eu"),
        ("", "", "n", "t", "m", "p", "k", "ch", "l", "s"),
        ("Mijn moeder maakt iedere maandag appeltaart.",),
    ),
    Lang(
        "pl",
        _ON + ("w", "sz", "cz", "ż", "ł", "rz", "ch", "dz", "pr", "br"),
        ("a", "e", "i", "o", "u", "y", "ą", "ę", "ó"),
        ("", "", "n", "m", "k", "ł", "sz", "ść"),
        ("Bardzo proszę, pani Basiu, mamy mało mleka.",),
    ),
    Lang(
        "sv",
        _ON + ("sj", "sk", "j", "tj", "kn"),
        ("a", "e", "i", "o", "u", "y", "å", "ä", "ö"),
        ("", "", "n", "m", "k", "t", "ll", "mm"),
        ("Min bror bor i en liten by vid havet.",),
    ),
)
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+klatt", "+klatt2")


def pseudo_sentence(lang: Lang, rng: np.random.Generator) -> str:
    words = []
    for _ in range(int(rng.integers(3, 11))):
        w = "".join(str(rng.choice(lang.onsets)) + str(rng.choice(lang.vowels)) for _ in range(int(rng.integers(1, 4))))
        words.append(w + str(rng.choice(lang.codas)))
    text = ""
    for k, w in enumerate(words):
        text += w + (", " if rng.random() < 0.12 and k < len(words) - 1 else " ")
    return text.strip().capitalize() + str(rng.choice([".", ".", "?", "!"]))


# --- augmentation ------------------------------------------------------------------------------


def room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic impulse response: the direct path plus exponentially decaying noise."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.003 * SR)] = 0  # reflections arrive a few ms after the direct sound
    ir = tail * (10 ** (rng.uniform(-12, -3) / 20) / (np.sqrt((tail**2).sum()) + 1e-9))
    ir[0] = 1.0
    return ir


def coloured_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    w = rng.standard_normal(n)
    if kind == "white":
        return w
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec /= np.sqrt(f) if kind == "pink" else f
    out = np.fft.irfft(spec, n)
    return out / (out.std() + 1e-12)


def codec_roundtrip(x: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """Encode float audio at 16 kHz with a lossy codec and decode it again (PyAV), re-aligned
    to the input by cross-correlation (codecs add priming delay) and cut to the same length."""
    import av

    fmt, rate = {"libopus": ("ogg", 48000), "aac": ("adts", SR), "libmp3lame": ("mp3", SR)}[codec]
    y = np.asarray(x, np.float32)
    if rate != SR:
        from scipy.signal import resample_poly

        y = resample_poly(y, rate // SR, 1).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        st = out.add_stream(codec, rate=rate)
        assert isinstance(st, av.AudioStream)
        st.bit_rate = bitrate
        st.layout = "mono"
        for s in range(0, len(y), rate // 10):
            fr = av.AudioFrame.from_ndarray(y[None, s : s + rate // 10].copy(), format="flt", layout="mono")
            fr.sample_rate = rate
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    buf.seek(0)
    chunks = []
    with av.open(buf, "r") as inp:
        res = av.AudioResampler(format="flt", layout="mono", rate=SR)
        for fr in inp.decode(audio=0):
            for r in res.resample(fr):
                chunks.append(r.to_ndarray().reshape(-1))
        for r in res.resample(None):
            chunks.append(r.to_ndarray().reshape(-1))
    dec = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    # find the delay on the first few seconds
    m = min(len(x), 4 * SR)
    max_lag = 4000
    if len(dec) < m + max_lag:
        dec = np.pad(dec, (0, m + max_lag - len(dec)))
    xc = fftconvolve(dec[: m + max_lag], x[:m][::-1], mode="valid")
    lag = int(np.argmax(xc))
    dec = dec[lag : lag + len(x)]
    return np.pad(dec, (0, len(x) - len(dec))).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, object]]:
    info: dict[str, object] = {}
    y = x.astype(np.float64)
    if rng.random() < 0.5:
        rt60 = float(rng.uniform(0.15, 0.7))
        y = fftconvolve(y, room_response(rng, rt60))[: len(y)]
        info["reverb_rt60"] = round(rt60, 3)
    if rng.random() < 0.3:
        lo, hi = float(rng.uniform(60, 300)), float(rng.uniform(3000, 7500))
        y = sosfilt(butter(4, [lo, hi], btype="band", fs=SR, output="sos"), y)
        info["band"] = [round(lo), round(hi)]
    if rng.random() < 0.6:
        kind = str(rng.choice(["white", "pink", "brown"]))
        snr = float(rng.uniform(5, 30))
        speech_pow = np.mean(y[np.abs(y) > 0.01 * np.abs(y).max()] ** 2) if np.any(y) else 1e-4
        y = y + coloured_noise(rng, len(y), kind) * np.sqrt(speech_pow / 10 ** (snr / 10))
        info["noise"] = [kind, round(snr, 1)]
    y = y / (np.abs(y).max() + 1e-9) * 10 ** (rng.uniform(-20, -1) / 20)
    y32 = y.astype(np.float32)
    if rng.random() < 0.5:
        codec, (lo_br, hi_br) = [
            ("libopus", (8000, 32000)),
            ("aac", (24000, 64000)),
            ("libmp3lame", (32000, 64000)),
        ][int(rng.integers(3))]
        br = int(rng.integers(lo_br // 1000, hi_br // 1000 + 1)) * 1000
        y32 = codec_roundtrip(y32, codec, br)
        info["codec"] = [codec, br]
    return np.clip(y32, -1, 1), info


# --- scenes and shards -------------------------------------------------------------------------


def speech_spans(sp: tts.Speech, t: float = 0.0) -> list[tuple[str, float, float]]:
    """Phoneme spans (symbol, start, end in s, shifted by ``t``), then the lip closures of
    /p b m/ labelled with their phoneme (tts.lip_closures): espeak times a stop from its
    release, so the silent closure before it, when the lips are shut, would otherwise be
    labelled as a pause or as the sound before it. Later spans win in phones.frame_labels."""
    spans = [(p.symbol, t + p.start, t + p.end) for p in sp.phonemes]
    return spans + [(p.symbol, t + a, t + b) for p, a, b in tts.lip_closures(sp)]


def make_scene(
    rng: np.random.Generator, seconds: float
) -> tuple[np.ndarray, list[tuple[str, float, float]], dict[str, object]]:
    """Audio (16 kHz float32) and phoneme spans (symbol, start, end in s) of one augmented scene."""
    lang = LANGS[int(rng.integers(len(LANGS)))]
    voice = lang.voice + str(rng.choice(VARIANTS))
    pitch, rate = int(rng.integers(15, 90)), int(rng.integers(110, 260))
    pieces: list[np.ndarray] = []
    spans: list[tuple[str, float, float]] = []
    t = 0.0
    while t < seconds:
        gap = np.zeros(int(rng.uniform(0.05, 0.5) * SR), np.float32)
        pieces.append(gap)
        t += len(gap) / SR
        text = str(rng.choice(lang.sentences)) if rng.random() < 0.2 else pseudo_sentence(lang, rng)
        sp = tts.synthesize(text, voice=voice, rate=rate, pitch=pitch).resampled(SR)
        pieces.append(sp.samples)
        spans += speech_spans(sp, t)
        t += sp.duration
    wav, info = augment(np.concatenate(pieces), rng)
    info |= {"voice": voice, "pitch": pitch, "rate": rate}
    return wav, spans, info


def make_shard(path: Path, seed: int, seconds: float) -> float:
    rng = np.random.default_rng(seed)
    wavs, labels, scenes = [], [], []
    symbols: dict[str, int] = {"_": 0}
    total = 0.0
    while total < seconds:
        wav, spans, info = make_scene(rng, float(rng.uniform(8, 20)))
        n_frames = len(wav) // MEL_HOP
        wavs.append(wav[: n_frames * MEL_HOP])
        labels.append(frame_labels(spans, n_frames, symbols))
        scenes.append(info | {"start": round(total, 3)})
        total += n_frames * MEL_HOP / SR
    save_shard(path, np.concatenate(wavs), np.concatenate(labels), symbols, json.dumps(scenes))
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="generate phoneme-labelled, augmented TTS speech")
    p.add_argument("--out", type=Path, default=Path("data2/tts"))
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--shard-seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.minutes <= 0 or args.shard_seconds <= 0:
        print("error: --minutes and --shard-seconds must be positive", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    n = int(np.ceil(args.minutes * 60 / args.shard_seconds))
    t0 = time.time()
    for k in range(n):
        path = args.out / f"tts_{k:04d}.npz"
        if path.exists():
            continue
        secs = make_shard(path, args.seed * 100003 + k, args.shard_seconds)
        logger.info("%s: %.0f s of speech (%d/%d, %.0f s elapsed)", path, secs, k + 1, n, time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
