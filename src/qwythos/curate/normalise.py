"""Step 1, normalise: Unicode repair (ftfy on non-ASCII text, then NFC), whitespace, GSM8K calculator marks.

Role names were already mapped to system/user/assistant by the readers. A message that carries pathway
spans is repaired piece by piece between span boundaries, and the spans are moved to the new offsets.
"""

from __future__ import annotations

import re
import unicodedata

from ..records import Record
from .config import NormaliseConfig

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_SPACES = re.compile(r"(?<=\S)[ \t\u00a0]{2,}")  # runs inside a line (leading indentation is kept)
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


def fix_unicode(text: str) -> str:
    if text.isascii():
        return text
    import ftfy

    return unicodedata.normalize("NFC", ftfy.fix_text(text, normalization="NFC"))


def fix_piece(text: str, cfg: NormaliseConfig, calculator: bool) -> str:
    """Character-level repairs that never need the surrounding text."""
    if cfg.fix_unicode:
        text = fix_unicode(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if calculator:
        text = _CALCULATOR.sub("", text)
    return text


def normalise_text(text: str, cfg: NormaliseConfig, calculator: bool = False) -> str:
    text = fix_piece(text, cfg, calculator)
    if "  " in text or "\t" in text or "\u00a0" in text:
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\t\n" in text:
        text = _TRAILING.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def normalise(record: Record, cfg: NormaliseConfig) -> Record:
    calculator = cfg.strip_calculator and record.meta.get("schema") == "gsm8k"
    spanned = {s["message"] for s in record.spans}
    for i, m in enumerate(record.messages):
        if i in spanned:
            _normalise_spanned(record, i, cfg, calculator)
        else:
            m["content"] = normalise_text(m["content"], cfg, calculator)
    return record


def _normalise_spanned(record: Record, i: int, cfg: NormaliseConfig, calculator: bool) -> None:
    content = record.messages[i]["content"]
    cuts = sorted(
        {0, len(content)} | {s[k] for s in record.spans if s["message"] == i for k in ("start", "end")}
    )
    new_offset, pieces = {}, []
    for a, b in zip(cuts, cuts[1:], strict=False):
        new_offset[a] = sum(map(len, pieces))
        pieces.append(fix_piece(content[a:b], cfg, calculator))
    new_offset[len(content)] = sum(map(len, pieces))
    record.messages[i]["content"] = "".join(pieces)
    for s in record.spans:
        if s["message"] == i:
            s["start"], s["end"] = new_offset[s["start"]], new_offset[s["end"]]
    record.spans = [s for s in record.spans if s["end"] > s["start"]]


def dedup_key(text: str) -> str:
    """What exact dedup compares: case-folded text with whitespace collapsed."""
    return " ".join(text.casefold().split())


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][\w'-]*")


def skeleton(text: str) -> str:
    """A templated problem's skeleton: numbers -> '#', capitalised words (names, and sentence starts, which
    a template's instances share) -> 'N', then the dedup key. "Tom has 3 apples." and "Ana has 12 apples."
    share one."""
    return dedup_key(_CAPITALISED.sub("N", _NUMBER.sub("#", text)))
