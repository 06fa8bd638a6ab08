"""Visual phoneme classes, and the rules that map every phoneme or viseme notation rtdub reads
onto them.

The lips show far fewer distinctions than the ear hears: /p b m/ look alike (closed lips),
/f v/ alike (lower lip under the upper teeth), and so on. Every phonetic input is reduced to
one of :data:`VISEME_CLASSES` before it drives the lips, whatever its notation:

    espeak-ng mnemonics (rtdub's own TTS, training shards)   ─► espeak_class
    IPA (rtdub's JSON phoneme files)                         ─► ipa_class
    ARPAbet (pocketsphinx, CMUdict)                          ─► arpabet_class
    Amazon Polly visemes (p t S T f k i r s u @ a e E o O sil) ─► polly_class
    Azure Speech viseme ids (0-21, the SAPI / Disney set)    ─► azure_class

The rule for a symbol a table does not list is the same everywhere and documented in the
README: an IPA-looking symbol is classed by its first letter (:func:`ipa_class`), anything else
is ``other``; the callers count how many symbols needed it.
"""

from __future__ import annotations

import unicodedata

from ..tts import BILABIALS, OPEN_VOWELS

VISEME_CLASSES = (
    "pause",
    "bilabial",  # p b m: lips closed
    "labiodental",  # f v: lower lip under the upper teeth
    "lip_round_glide",  # w, bilabial fricatives
    "open_vowel",  # a ɑ æ ʌ and diphthongs from them: jaw wide open
    "rounded_vowel",  # o ɔ u ʊ y ø œ
    "spread_vowel",  # i ɪ e ɛ j
    "central_vowel",  # ə ɜ ɚ
    "dental",  # θ ð: tongue between the teeth
    "alveolar",  # t d n l r ɹ ɾ
    "sibilant",  # s z ʃ ʒ tʃ dʒ ts
    "back",  # k g ŋ h x ʁ: velar, uvular, glottal
    "other",
)
N_CLASSES = len(VISEME_CLASSES)
PAUSE, BILABIAL, LABIODENTAL, ROUND_GLIDE, OPEN, ROUNDED, SPREAD, CENTRAL, DENTAL, ALVEOLAR, SIBILANT, BACK, OTHER = (
    range(N_CLASSES)
)

_ESPEAK_SIBILANTS = ("tS", "dZ", "ts", "dz")


def espeak_class(symbol: str) -> int:
    """The class of an espeak-ng phoneme mnemonic (stress already removed)."""
    s = symbol.strip()
    if not s or s.startswith("_"):
        return PAUSE
    if s in BILABIALS:
        return BILABIAL
    if s in OPEN_VOWELS or s[0] in "aA&":
        return OPEN
    if s.startswith(_ESPEAK_SIBILANTS) or s[0] in "szSZC":
        return SIBILANT
    c = s[0]
    if c in "fv":
        return LABIODENTAL
    if c in "wWB":
        return ROUND_GLIDE
    if c in "oOuUy0Y289":
        return ROUNDED
    if c in "iIeEj":
        return SPREAD
    if c in "@3V":
        return CENTRAL
    if c in "TD":
        return DENTAL
    if c in "tdnlrL":
        return ALVEOLAR
    if c in "kgNhxXqGRcJ":
        return BACK
    return OTHER


# IPA letters by class (first letter of a symbol, after stress, length and tie marks)
_IPA = {
    BILABIAL: "pbmɓʙ",
    LABIODENTAL: "fvɱʋ",
    ROUND_GLIDE: "wʍɥɸβ",
    OPEN: "aɑæɐʌɶ",
    ROUNDED: "oɔuʊyøœɒɵʉɞ",
    SPREAD: "iɪeɛjɨɘʏ",
    CENTRAL: "əɜɚɝ",
    DENTAL: "θð",
    ALVEOLAR: "tdnlrɹɾɫɭɽɻɺɬɮʈɖɳ",
    SIBILANT: "szʃʒɕʑʂʐ",
    BACK: "kgɡŋhxɣχʁqɢʔħʕçʝcɟɲɦʀɰʎ",
}
_IPA_CLASS = {ch: cls for cls, chars in _IPA.items() for ch in chars}
_IPA_SKIP = set("ˈˌːˑ.‿͜͡ʰʷʲˠˤ̃̚")  # stress, length, syllable and tie marks, secondary articulations
_IPA_PAUSES = {"", "_", "sil", "sp", "spn", "pau", "#", "|", "‖"}


def ipa_class(symbol: str) -> int | None:
    """The class of an IPA phoneme (``"ʃ"``, ``"aɪ"``, ``"tʃ"``, ``"ˈa"``), or None when its
    first letter is not an IPA letter rtdub knows. Affricates ending in a sibilant are
    sibilants; a diphthong takes its first vowel's class."""
    s = unicodedata.normalize("NFD", symbol.strip())
    if s.lower() in _IPA_PAUSES:
        return PAUSE
    letters = [c for c in s if c not in _IPA_SKIP and not unicodedata.combining(c)]
    if not letters:
        return PAUSE
    if len(letters) >= 2 and letters[0] in "td" and _IPA_CLASS.get(letters[1]) == SIBILANT:
        return SIBILANT
    return _IPA_CLASS.get(letters[0])


# ARPAbet (CMUdict, pocketsphinx), stress digits removed
_ARPABET = {
    "AA": OPEN, "AE": OPEN, "AH": CENTRAL, "AO": ROUNDED, "AW": OPEN, "AY": OPEN,
    "EH": SPREAD, "ER": CENTRAL, "EY": SPREAD, "IH": SPREAD, "IY": SPREAD,
    "OW": ROUNDED, "OY": ROUNDED, "UH": ROUNDED, "UW": ROUNDED,
    "B": BILABIAL, "P": BILABIAL, "M": BILABIAL, "F": LABIODENTAL, "V": LABIODENTAL,
    "W": ROUND_GLIDE, "TH": DENTAL, "DH": DENTAL,
    "T": ALVEOLAR, "D": ALVEOLAR, "N": ALVEOLAR, "L": ALVEOLAR, "R": ALVEOLAR,
    "S": SIBILANT, "Z": SIBILANT, "SH": SIBILANT, "ZH": SIBILANT, "CH": SIBILANT, "JH": SIBILANT,
    "K": BACK, "G": BACK, "NG": BACK, "HH": BACK, "Y": SPREAD,
    "SIL": PAUSE, "SP": PAUSE, "+NSN+": PAUSE, "+SPN+": PAUSE,
}  # fmt: skip


def arpabet_class(symbol: str) -> int | None:
    """The class of an ARPAbet phone (``"AA1"``, ``"sh"``), or None when it is not one."""
    return _ARPABET.get(symbol.strip().upper().rstrip("012"))


# Amazon Polly's viseme set (the en-US table: p = p b m, t = t d n, S = ʃ ʒ tʃ dʒ, T = θ ð,
# f = f v, k = k g ŋ h, i = i ɪ j, r = ɹ, s = s z, u = u ʊ w, @ = ə, a = æ ɑ ʌ aɪ aʊ,
# e = e ɛ eɪ, E = ɝ ɚ, o = o oʊ, O = ɔ ɔɪ)
_POLLY = {
    "sil": PAUSE, "p": BILABIAL, "t": ALVEOLAR, "S": SIBILANT, "T": DENTAL, "f": LABIODENTAL,
    "k": BACK, "i": SPREAD, "r": ALVEOLAR, "s": SIBILANT, "u": ROUNDED, "@": CENTRAL,
    "a": OPEN, "e": SPREAD, "E": CENTRAL, "o": ROUNDED, "O": ROUNDED,
}  # fmt: skip


def polly_class(value: str) -> int | None:
    """The class of an Amazon Polly viseme value, or None for one outside Polly's set."""
    return _POLLY.get(value.strip())


# Azure Speech viseme ids: the SAPI / Disney set (0 silence, 1 æ ə ʌ, 2 ɑ, 3 ɔ, 4 ɛ ʊ eɪ,
# 5 ɝ, 6 j i ɪ, 7 w u, 8 oʊ, 9 aʊ, 10 ɔɪ, 11 aɪ, 12 h, 13 ɹ, 14 l, 15 s z, 16 ʃ tʃ dʒ ʒ,
# 17 ð θ, 18 f v, 19 d t n, 20 k g ŋ, 21 p b m)
_AZURE = (
    PAUSE, OPEN, OPEN, ROUNDED, SPREAD, CENTRAL, SPREAD, ROUNDED, ROUNDED, OPEN, ROUNDED, OPEN,
    BACK, ALVEOLAR, ALVEOLAR, SIBILANT, SIBILANT, DENTAL, LABIODENTAL, ALVEOLAR, BACK, BILABIAL,
)  # fmt: skip
AZURE_IDS = len(_AZURE)


def azure_class(viseme_id: int) -> int | None:
    """The class of an Azure Speech viseme id, or None outside 0-21."""
    return _AZURE[viseme_id] if 0 <= viseme_id < AZURE_IDS else None
