"""Text-to-speech with exact phoneme timings from espeak-ng's C API (through ctypes).

The shared library and its data come from the ``espeakng-loader`` wheel. espeak-ng runs in
synchronous mode with phoneme events enabled: every ``espeakEVENT_PHONEME`` event carries the
phoneme mnemonic (e.g. ``p``, ``'A:``, ``_:``) and the sample index at which it starts, so a
phoneme's timing is exact to the sample. Stress marks (``'`` primary, ``,`` secondary) are
split off the mnemonic into :attr:`Phoneme.stress`.

espeak-ng keeps global state in the process, so every call into it holds one module lock;
the library is initialised once, on first use, and the voice is selected again on each call.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .exceptions import RtdubError

logger = logging.getLogger(__name__)

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() when the data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

RATE_MIN, RATE_MAX = 80, 450  # words per minute (espeakRATE_MINIMUM / espeakRATE_MAXIMUM)
PITCH_MIN, PITCH_MAX = 0, 100

_STRESS_MARKS = {"'": 2, ",": 1}  # prefixes espeak puts on stressed vowels in phoneme events
PAUSES: frozenset[str] = frozenset({"_", "_:", "_!", "_|", "_^_"})  # silence / glottal markers

# Lips closed: /p b m/ and the variants espeak-ng's phoneme tables mark as bilabial stops or
# nasals (en and es emit only "p b m"; de adds "pF" for the affricate /pf/, fr uses "p2" in
# some words). "m-" is syllabic m. The bilabial fricative "B" (Spanish "haba") is left out:
# its lips approach but do not close.
BILABIALS: frozenset[str] = frozenset(
    {"p", "b", "m", "m-", "pF", "p2", "ph", "p-", "p#", "b#", "m#", "p;", "b;", "m;", "p_h", "p`"}
)

# Jaw wide open: open and near-open vowels and the diphthongs starting from one. What espeak
# emits: en "a" (æ), "a#" (ɐ), "aa" (æ in "bath"), "A:" (ɑː), "A@" (ɑːɹ), "V" (ʌ), "aI", "aU";
# de "a", "A", "A:", "aI", "aU"; fr "a", "a-", "A~" (ɑ̃); es "a", "aI", "aU".
OPEN_VOWELS: frozenset[str] = frozenset(
    {
        "a", "a:", "a#", "a#2", "a2", "a-", "a/", "aa", "&",
        "aI", "aI3", "aI@", "aU", "aU@",
        "A", "A:", "A#", "A@", "A~", "V",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Phoneme:
    symbol: str  # espeak phoneme mnemonic without stress mark, e.g. "p", "a:", "_:" (pauses)
    start: float  # seconds
    end: float  # seconds: start of the next phoneme, or the end of the audio
    stress: int = 0  # 2 primary ('), 1 secondary (,), 0 none

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value; compare by identity
class Speech:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int  # 22050 from espeak
    phonemes: tuple[Phoneme, ...]

    def __post_init__(self) -> None:
        samples = np.ascontiguousarray(self.samples, dtype=np.float32)
        if samples.ndim != 1:
            raise RtdubError(f"Speech samples must be mono (1-D), got shape {samples.shape}")
        if self.sample_rate <= 0:
            raise RtdubError(f"Speech sample rate must be positive, got {self.sample_rate}")
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "phonemes", tuple(self.phonemes))

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.samples.shape[0] / self.sample_rate

    def resampled(self, rate: int) -> Speech:
        """The same speech at ``rate`` Hz (polyphase resampling); phoneme times are unchanged."""
        if rate <= 0:
            raise RtdubError(f"sample rate must be positive, got {rate}")
        if rate == self.sample_rate:
            return self
        from scipy.signal import resample_poly  # scipy comes with scikit-image

        g = math.gcd(rate, self.sample_rate)
        up, down = rate // g, self.sample_rate // g
        if self.samples.size:
            out = resample_poly(self.samples.astype(np.float64), up, down)
            out = np.clip(out, -1.0, 1.0).astype(np.float32)
        else:
            out = np.zeros(0, dtype=np.float32)
        return Speech(out, rate, self.phonemes)


# --- ctypes bindings ------------------------------------------------------------------------


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme mnemonic, NUL-terminated unless all 8 are used
    ]


class _Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this message
        ("sample", ctypes.c_int),  # sample index from the start of this message
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated code)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Collector:
    """Receives audio blocks and phoneme events for one espeak_Synth call."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.n_samples = 0
        self.events: list[tuple[bytes, int, int]] = []  # (mnemonic, sample, audio_position ms)
        self.error: BaseException | None = None

    def __call__(self, wav: Any, numsamples: int, events: Any) -> int:
        try:
            if wav and numsamples > 0:
                n_bytes = numsamples * ctypes.sizeof(ctypes.c_short)
                self.chunks.append(ctypes.string_at(wav, n_bytes))
                self.n_samples += numsamples
            if events:
                i = 0
                while events[i].type != _EVENT_LIST_TERMINATED:
                    ev = events[i]
                    if ev.type == _EVENT_PHONEME:
                        self.events.append((bytes(ev.id.string), ev.sample, ev.audio_position))
                    i += 1
        except BaseException as exc:  # an exception must not cross the C boundary
            self.error = exc
            return 1  # abort synthesis
        return 0


@dataclass
class _Engine:
    lib: ctypes.CDLL
    sample_rate: int
    data_path: str
    callback: Any  # keeps the ctypes callback object alive
    voices: list[_VoiceInfo] | None = None  # filled on first use by _voices()


_LOCK = threading.Lock()
_engine: _Engine | None = None
_collector: _Collector | None = None


def _dispatch(wav: Any, numsamples: int, events: Any) -> int:
    if _collector is None:  # synthesis outside synthesize(): ignore the audio
        return 0
    return _collector(wav, numsamples, events)


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_uint = ctypes.c_int, ctypes.c_uint
    c_char_p, c_void_p = ctypes.c_char_p, ctypes.c_void_p
    lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
    lib.espeak_Initialize.restype = c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [c_char_p]
    lib.espeak_SetVoiceByName.restype = c_int
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_SetVoiceByProperties.restype = c_int
    lib.espeak_GetCurrentVoice.argtypes = []
    lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
    lib.espeak_SetParameter.restype = c_int
    lib.espeak_Synth.argtypes = [
        c_void_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint, ctypes.POINTER(c_uint), c_void_p
    ]  # fmt: skip
    lib.espeak_Synth.restype = c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(c_char_p)]
    lib.espeak_Info.restype = c_char_p


def _get_engine() -> _Engine:
    """Load and initialise espeak-ng once. Call with ``_LOCK`` held."""
    global _engine
    if _engine is not None:
        return _engine
    try:
        import espeakng_loader
    except ImportError as exc:
        raise ImportError("rtdub.tts needs the espeak-ng library: pip install espeakng-loader") from exc
    lib_path = espeakng_loader.get_library_path()
    data_path = espeakng_loader.get_data_path()
    try:
        lib = ctypes.CDLL(lib_path)
        _declare(lib)
    except (OSError, AttributeError) as exc:
        raise RtdubError(f"cannot load espeak-ng from {lib_path}: {exc}") from exc
    sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(data_path),
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
    )  # fmt: skip
    if sample_rate <= 0:
        raise RtdubError(f"espeak_Initialize failed ({sample_rate}) with data at {data_path}")
    callback = _SynthCallback(_dispatch)
    lib.espeak_SetSynthCallback(callback)
    version = (lib.espeak_Info(None) or b"?").decode(errors="replace")
    logger.debug("espeak-ng %s initialised: %d Hz, data %s", version, sample_rate, data_path)
    _engine = _Engine(lib, sample_rate, data_path, callback)
    return _engine


# --- voices ---------------------------------------------------------------------------------


def _languages(voice: _Voice) -> list[str]:
    """Decode espeak_VOICE.languages: (priority byte, NUL-terminated code) pairs."""
    out: list[str] = []
    p = voice.languages
    while p:
        if ctypes.string_at(p, 1) == b"\0":
            break
        code = ctypes.string_at(p + 1)
        out.append(code.decode(errors="replace"))
        p += 2 + len(code)
    return out


@lru_cache(maxsize=256)
def _has_dictionary(data_path: str, identifier: str) -> bool:
    """Whether the pronunciation dictionary a voice needs is installed.

    The dictionary is named by the voice file's ``dictionary`` line, else by its first
    ``language`` code up to the first hyphen (as espeak-ng does). Unknown layouts count as
    present."""
    lang_file = os.path.join(data_path, "lang", identifier.split("+")[0])
    try:
        with open(lang_file, encoding="latin-1") as f:
            lines = [line.split() for line in f]
    except OSError:
        return True
    dictionary = next((w[1] for w in lines if len(w) > 1 and w[0] == "dictionary"), None)
    if dictionary is None:
        language = next((w[1] for w in lines if len(w) > 1 and w[0] == "language"), None)
        if language is None:
            return True
        dictionary = language.split("-")[0]
    return os.path.exists(os.path.join(data_path, f"{dictionary}_dict"))


@dataclass(frozen=True)
class _VoiceInfo:
    name: str
    identifier: str  # file name under espeak-ng-data/lang, e.g. "gmw/de"
    languages: tuple[str, ...]  # in preference order, e.g. ("en-gb", "en")
    usable: bool  # False for mbrola voices and voices without an installed dictionary

    def keys(self) -> set[str]:
        """Lower-case strings that select this voice."""
        base = self.identifier.rsplit("/", 1)[-1]
        return {k.lower() for k in (self.name.strip(), self.identifier, base, *self.languages)}

    def languages_lower(self) -> tuple[str, ...]:
        return tuple(code.lower() for code in self.languages)


def _voices(engine: _Engine) -> list[_VoiceInfo]:
    """Every installed voice, listed once per process. Call with ``_LOCK`` held."""
    if engine.voices is not None:
        return engine.voices
    listing = engine.lib.espeak_ListVoices(None)
    if not listing:
        raise RtdubError("espeak_ListVoices returned no voices")
    out: list[_VoiceInfo] = []
    i = 0
    while listing[i]:
        v = listing[i].contents
        i += 1
        identifier = (v.identifier or b"").decode(errors="replace")
        usable = not identifier.startswith("mb/") and _has_dictionary(engine.data_path, identifier)
        name = (v.name or b"").decode(errors="replace")
        out.append(_VoiceInfo(name, identifier, tuple(_languages(v)), usable))
    engine.voices = out
    return out


def _select_voice(engine: _Engine, voice: str) -> str:
    """Select ``voice`` (name, identifier, file name, or language code). Returns the identifier."""
    if not voice or "\0" in voice:
        raise RtdubError(f"unknown espeak voice {voice!r}")
    lib = engine.lib
    wanted = voice.split("+", 1)[0].lower()  # "+f2" etc. picks a variant of the voice
    voices = _voices(engine)
    broken = next((v for v in voices if not v.usable and wanted in v.keys()), None)
    if broken is not None and not any(v.usable and wanted in v.keys() for v in voices):
        # Checked before loading it: espeak would complain on stderr and speak nothing.
        raise RtdubError(f"espeak voice {voice!r} ({broken.identifier}) has no dictionary installed")
    if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        # A language code such as "en-gb" or "fr-fr": espeak_SetVoiceByName only matches
        # names and file names, so find the voice that lists the code.
        match = next((v for v in voices if v.usable and wanted in v.languages_lower()), None)
        if match is None or lib.espeak_SetVoiceByName(match.identifier.encode()) != _EE_OK:
            # Last resort: let espeak pick the closest voice for the language.
            language = ctypes.create_string_buffer(voice.encode())  # outlives the call below
            spec = _Voice()
            spec.languages = ctypes.addressof(language)
            if lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != _EE_OK:
                raise RtdubError(f"unknown espeak voice {voice!r} (see rtdub.tts.available_voices())")
    current = lib.espeak_GetCurrentVoice()
    identifier = ""
    if current and current.contents.identifier:
        identifier = current.contents.identifier.decode(errors="replace")
    if identifier and not _has_dictionary(engine.data_path, identifier):
        raise RtdubError(f"espeak voice {voice!r} ({identifier}) has no dictionary installed")
    return identifier


def available_voices() -> list[str]:
    """Language codes usable as ``synthesize(voice=...)``, e.g. "de", "en", "en-us", "fr-fr".

    Voices whose pronunciation dictionary is not installed are left out. Voice names
    ("German"), identifiers ("gmw/de") and variants ("de+f2") are accepted by synthesize too."""
    with _LOCK:
        engine = _get_engine()
        codes = {code for v in _voices(engine) if v.usable for code in v.languages}
    return sorted(codes)


# --- synthesis ------------------------------------------------------------------------------


def _phonemes(events: list[tuple[bytes, int, int]], n_samples: int, sample_rate: int) -> tuple[Phoneme, ...]:
    """Turn phoneme events into contiguous Phonemes; zero-length markers are dropped."""
    marks: list[tuple[str, int, int]] = []  # (symbol, stress, start sample)
    last = 0
    for raw, sample, ms in events:
        text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        stress = 0
        while text and text[0] in _STRESS_MARKS:
            stress = max(stress, _STRESS_MARKS[text[0]])
            text = text[1:]
        if not text or (text.startswith("(") and text.endswith(")")):
            continue  # nothing left, or a language switch marker such as "(en)"
        if abs(sample * 1000.0 / sample_rate - ms) > 2.0:  # not a sample index: use the ms
            sample = round(ms * sample_rate / 1000.0)
        sample = min(max(sample, last), n_samples)
        last = sample
        marks.append((text, stress, sample))
    out: list[Phoneme] = []
    for k, (symbol, stress, start) in enumerate(marks):
        end = marks[k + 1][2] if k + 1 < len(marks) else n_samples
        if end > start:
            out.append(Phoneme(symbol, start / sample_rate, end / sample_rate, stress))
    return tuple(out)


def synthesize(text: str, voice: str = "en", rate: int = 160, pitch: int = 50) -> Speech:
    """Speak ``text`` with espeak-ng; returns the audio and the phonemes with their times.

    ``voice`` is an espeak voice name or language code (see :func:`available_voices`),
    ``rate`` is in words per minute (80-450), ``pitch`` the base pitch (0-100, 50 normal).
    Raises RtdubError for an unknown voice, an out-of-range parameter or a failing call."""
    if not RATE_MIN <= rate <= RATE_MAX:
        raise RtdubError(f"speech rate {rate} is outside {RATE_MIN}-{RATE_MAX} words per minute")
    if not PITCH_MIN <= pitch <= PITCH_MAX:
        raise RtdubError(f"pitch {pitch} is outside {PITCH_MIN}-{PITCH_MAX}")
    global _collector
    data = text.replace("\0", " ").encode("utf-8")
    with _LOCK:
        engine = _get_engine()
        lib = engine.lib
        identifier = _select_voice(engine, voice)
        if not text.strip():
            return Speech(np.zeros(0, dtype=np.float32), engine.sample_rate, ())
        if lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0) != _EE_OK:
            raise RtdubError(f"espeak_SetParameter(rate={rate}) failed")
        if lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0) != _EE_OK:
            raise RtdubError(f"espeak_SetParameter(pitch={pitch}) failed")
        collector = _Collector()
        _collector = collector
        try:
            buf = ctypes.create_string_buffer(data)
            status = lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status == _EE_OK:
                status = lib.espeak_Synchronize()
        finally:
            _collector = None
        if collector.error is not None:
            raise RtdubError(f"espeak synthesis callback failed: {collector.error!r}") from (collector.error)
        if status != _EE_OK:
            raise RtdubError(f"espeak_Synth failed with status {status} for voice {voice!r}")
        sample_rate = engine.sample_rate
    pcm = np.frombuffer(b"".join(collector.chunks), dtype=np.int16)
    samples = pcm.astype(np.float32) / 32768.0
    phonemes = _phonemes(collector.events, pcm.shape[0], sample_rate)
    logger.debug(
        "synthesised %d chars with %s (%s): %.2f s, %d phonemes",
        len(text), voice, identifier, pcm.shape[0] / sample_rate, len(phonemes),
    )  # fmt: skip
    return Speech(samples, sample_rate, phonemes)


def frames_with(speech: Speech, symbols: frozenset[str], fps: float, core: float = 0.6) -> np.ndarray:
    """Bool per video frame at times ``k / fps`` covering the audio: True where a phoneme in
    ``symbols`` is sounding. Only the central ``core`` fraction of each phoneme counts, so
    frames on a boundary between two phonemes stay False."""
    hits = [p for p in speech.phonemes if p.symbol in symbols]
    return frames_in(speech, [(p.start, p.end) for p in hits], fps, core)


def frames_in(speech: Speech, intervals: Sequence[tuple[float, float]], fps: float, core: float = 0.6) -> np.ndarray:
    """Bool per video frame at times ``k / fps`` covering the audio: True inside the central
    ``core`` fraction of any of the (start, end) ``intervals`` (seconds)."""
    if fps <= 0:
        raise RtdubError(f"fps must be positive, got {fps}")
    if not 0.0 < core <= 1.0:
        raise RtdubError(f"core must be in (0, 1], got {core}")
    n = max(0, math.ceil(speech.duration * fps - 1e-9))
    times = np.arange(n, dtype=np.float64) / fps
    if not intervals or n == 0:
        return np.zeros(n, dtype=bool)
    starts = np.array([a for a, _ in intervals], dtype=np.float64)
    ends = np.array([b for _, b in intervals], dtype=np.float64)
    mid, half = (starts + ends) / 2, (ends - starts) * core / 2
    lo = np.searchsorted(times, mid - half, side="left")
    hi = np.searchsorted(times, mid + half, side="right")
    count = np.zeros(n + 1, dtype=np.int64)
    np.add.at(count, lo, 1)
    np.add.at(count, hi, -1)
    return np.cumsum(count[:n]) > 0


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-10))


def lip_closures(
    speech: Speech, quiet_db: float = 20.0, max_closure: float = 0.12, step: float = 0.005
) -> list[tuple[Phoneme, float, float]]:
    """Every /p b m/ of ``speech`` with the (start, end) seconds its lips are closed.

    espeak-ng times a bilabial *stop* from its release: for /p/ the silent closure, when the
    lips are shut, lies before the phoneme event (measured on the protocol sentence: 40-50 ms
    of digital silence, then the burst at the event). So a stop's closure is the quiet
    stretch that ends at its event: going back from the event in ``step`` hops while the
    10 ms level stays ``quiet_db`` below the median level of the voiced speech, at most
    ``max_closure``; it runs to 20 % into the phoneme (the release). When no quiet stretch
    precedes the event (a voiced /b/, whose closure espeak puts inside the phoneme), the
    closure is the first 60 % of the phoneme. Nasals (/m/) close the lips for their whole
    duration."""
    x, sr = speech.samples, speech.sample_rate
    win = max(1, int(0.01 * sr))
    levels = [_db(x[i : i + win]) for i in range(0, max(0, x.size - win), win)]
    voiced = [v for v in levels if v > -60.0]
    floor = (float(np.median(voiced)) if voiced else 0.0) - quiet_db
    out: list[tuple[Phoneme, float, float]] = []
    for p in speech.phonemes:
        if p.symbol not in BILABIALS:
            continue
        if p.symbol.startswith("m"):
            out.append((p, p.start, p.end))
            continue
        t = p.start
        while p.start - t < max_closure - 1e-9:  # the 10 ms before t quiet: t moves back a step
            a = int(round((t - 0.01) * sr))
            if a < 0 or _db(x[a : a + win]) >= floor:
                break
            t -= step
        if p.start - t >= 0.01:
            out.append((p, t, p.start + 0.2 * p.duration))
        else:
            out.append((p, p.start, p.start + 0.6 * p.duration))
    return out


def closure_frames(speech: Speech, fps: float, core: float = 0.6) -> np.ndarray:
    """Bool per video frame: True inside the central ``core`` fraction of a lip closure of
    /p b m/ (:func:`lip_closures`)."""
    return frames_in(speech, [(a, b) for _, a, b in lip_closures(speech)], fps, core)
