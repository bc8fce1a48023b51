"""SillyTavern Character Cards (V1, V2, V3) as JSON or PNG, read and written so nothing is lost on the way.

A card's fields live under ``data`` (V2 ``chara_card_v2``, V3 ``chara_card_v3``); a V1 card is flat and is
upgraded to V2. ``Card.raw`` keeps the whole original dict, so unknown keys at the top level, under ``data``
and under ``extensions`` survive ``card_to_dict(parse_card(d)) == d``. A PNG carries the card as base64 JSON
in tEXt chunks: ``chara`` (V2) and ``ccv3`` (V3, which wins when both are present), as SillyTavern does.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAX_CARD_BYTES = 8 * 1024 * 1024  # a larger file or byte string is refused before it is parsed
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPECS = {"chara_card_v2": "2.0", "chara_card_v3": "3.0"}  # spec -> spec_version
CARD_KEYWORDS = ("chara", "ccv3")  # tEXt keywords that carry a card; ccv3 wins

TEXT_FIELDS = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "post_history_instructions",
    "creator_notes",
    "creator",
    "character_version",
)
LIST_FIELDS = ("alternate_greetings", "tags")
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")


class CardError(ValueError):
    """A card that cannot be read: the message names what is wrong and how to fix it."""


@dataclass
class Card:
    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = field(default_factory=list)
    creator_notes: str = ""
    tags: list[str] = field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    character_book: dict | None = None  # the raw book; lorebook.lorebook_from_card_book reads it
    extensions: dict = field(default_factory=dict)  # preserved verbatim
    spec: str = "chara_card_v2"  # or "chara_card_v3"
    raw: dict = field(default_factory=dict)  # the original dict: unknown keys survive a round trip


def _check_fields(data: dict) -> None:
    for key in TEXT_FIELDS:
        if key in data and not isinstance(data[key], str):
            raise CardError(f"card field data.{key} must be a string, got {type(data[key]).__name__}")
    for key in LIST_FIELDS:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CardError(f'card field data.{key} must be a list of strings, e.g. ["Hello!"]')
    book = data.get("character_book")
    if book is not None and not isinstance(book, dict):
        raise CardError("card field data.character_book must be an object (a lorebook) or null")
    if not isinstance(data.get("extensions", {}), dict):
        raise CardError("card field data.extensions must be an object; use {} when there are none")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CardError("card has no name: set data.name (V2/V3) or name (V1) to the character's name")


def parse_card(obj: dict) -> Card:
    """A Card from a V2/V3 card dict (fields under ``data``) or a flat V1 card, which is upgraded to V2."""
    if not isinstance(obj, dict):
        raise CardError(f"a card must be a JSON object, got {type(obj).__name__}")
    raw = copy.deepcopy(obj)
    spec = raw.get("spec")
    if spec is None and "data" not in raw:  # V1: flat; the upgrade moves its fields under data
        _check_fields(raw)
        data = {k: raw.pop(k) for k in V1_FIELDS if k in raw}
        raw = {"spec": "chara_card_v2", "spec_version": "2.0", "data": data, **raw}
        spec = "chara_card_v2"
    if spec not in SPECS:
        raise CardError(f"unknown card spec {spec!r}: expected one of {sorted(SPECS)} (or a flat V1 card)")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise CardError(f"a {spec} card needs its fields in a 'data' object")
    _check_fields(data)
    fields = {k: data.get(k, "") for k in TEXT_FIELDS}
    fields |= {k: list(data.get(k, [])) for k in LIST_FIELDS}
    return Card(
        **fields,
        character_book=copy.deepcopy(data.get("character_book")),
        extensions=copy.deepcopy(data.get("extensions", {})),
        spec=spec,
        raw=raw,
    )


def card_to_dict(card: Card, spec: str | None = None) -> dict:
    """The card as a dict: its raw dict with the fields written back (a field absent from the original and
    still at its default stays absent, so an untouched card round trips exactly). ``spec`` converts."""
    spec = spec or card.spec
    if spec not in SPECS:
        raise CardError(f"unknown card spec {spec!r}: expected one of {sorted(SPECS)}")
    out = copy.deepcopy(card.raw) or {}
    data = out.setdefault("data", {})
    values = {k: getattr(card, k) for k in TEXT_FIELDS + LIST_FIELDS}
    values |= {"character_book": card.character_book, "extensions": card.extensions}
    for key, value in values.items():
        if key in data or value not in ("", [], {}, None):
            data[key] = copy.deepcopy(value)
    for key in V1_FIELDS:  # SillyTavern mirrors the V1 fields at the top level; keep a mirror current
        if key in out:
            out[key] = getattr(card, key)
    if spec != card.spec or "spec" not in out:
        out["spec"], out["spec_version"] = spec, SPECS[spec]
    return out


def expand_macros(text: str, char: str, user: str) -> str:
    """Replace {{char}} / {{user}} (any case, as SillyTavern does) and the legacy <BOT> / <USER>."""
    text = re.sub(r"\{\{char\}\}|<bot>", lambda _: char, text, flags=re.IGNORECASE)
    return re.sub(r"\{\{user\}\}|<user>", lambda _: user, text, flags=re.IGNORECASE)


# PNG: a signature, then chunks of (length, type, data, CRC of type + data); tEXt data = keyword NUL text.


def _png_chunks(data: bytes, name: str) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise CardError(f"{name}: PNG is truncated inside a chunk header at byte {pos}; re-export it")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise CardError(f"{name}: PNG chunk {kind!r} at byte {pos} runs past the end; re-export it")
        body = data[pos + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(kind + body) != crc:
            raise CardError(
                f"{name}: PNG chunk {kind!r} at byte {pos} has a bad CRC (file corrupt); re-export it"
            )
        chunks.append((kind, body))
        pos = end + 4
        if kind == b"IEND":
            break
    if not chunks or chunks[-1][0] != b"IEND":
        raise CardError(f"{name}: PNG has no IEND chunk (truncated); re-export it")
    return chunks


def _png_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    parts = [PNG_SIGNATURE]
    for kind, body in chunks:
        parts.append(struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(parts)


def _text_keyword(kind: bytes, body: bytes) -> str | None:
    if kind != b"tEXt" or b"\x00" not in body:
        return None
    return body.split(b"\x00", 1)[0].decode("latin-1")


def _decode_payload(payload: bytes, where: str) -> dict:
    try:
        text = base64.b64decode(b"".join(payload.split()), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise CardError(f"{where}: not valid base64 of UTF-8 JSON ({e}); re-export the card") from e
    return _decode_json(text, where)


def _decode_json(text: str, where: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CardError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    if not isinstance(obj, dict):
        raise CardError(f"{where}: the card must be a JSON object, got {type(obj).__name__}")
    return obj


def load_card_bytes(data: bytes, name: str = "<bytes>") -> Card:
    """A Card from a PNG (detected by its signature) or JSON; ``name`` labels the errors."""
    if len(data) > MAX_CARD_BYTES:
        raise CardError(
            f"{name}: {len(data)} bytes is over MAX_CARD_BYTES ({MAX_CARD_BYTES}); shrink the image"
        )
    if data.startswith(PNG_SIGNATURE):
        found = {}
        for kind, body in _png_chunks(data, name):
            keyword = _text_keyword(kind, body)
            if keyword in CARD_KEYWORDS:
                found[keyword] = body.split(b"\x00", 1)[1]
        if not found:
            raise CardError(f"{name}: PNG has no 'chara' or 'ccv3' tEXt chunk; it is an image, not a card")
        keyword = "ccv3" if "ccv3" in found else "chara"
        return parse_card(_decode_payload(found[keyword], f"{name} ({keyword} chunk)"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CardError(f"{name}: neither a PNG nor UTF-8 JSON; give a card .png or .json file") from e
    if not text.lstrip().startswith(("{", "[")):
        raise CardError(f"{name}: neither a PNG nor JSON; give a card .png or .json file")
    return parse_card(_decode_json(text, name))


def read_card(source: str | Path | bytes) -> Card:
    """A Card from a path (PNG or JSON) or the file's bytes; the size limit is checked before reading."""
    if isinstance(source, bytes):
        return load_card_bytes(source)
    path = Path(source)
    size = path.stat().st_size
    if size > MAX_CARD_BYTES:
        raise CardError(f"{path}: {size} bytes is over MAX_CARD_BYTES ({MAX_CARD_BYTES}); shrink the image")
    return load_card_bytes(path.read_bytes(), str(path))


def minimal_png() -> bytes:
    """A valid 1x1 transparent RGBA PNG, the image of a card that comes without one."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00\x00\x00\x00")  # filter byte + one RGBA pixel
    return _png_bytes([(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")])


def card_to_png(card: Card, image: bytes | None = None) -> bytes:
    """The image (or a 1x1 PNG) with the card in a ``chara`` (V2) and a ``ccv3`` (V3) tEXt chunk before
    IEND; existing card chunks are replaced, every other chunk is kept byte for byte."""
    image = minimal_png() if image is None else image
    if not image.startswith(PNG_SIGNATURE):
        raise CardError("card_to_png: image is not a PNG; pass PNG bytes or None for a 1x1 image")
    chunks = [(k, b) for k, b in _png_chunks(image, "image") if _text_keyword(k, b) not in CARD_KEYWORDS]
    for keyword, spec in (("chara", "chara_card_v2"), ("ccv3", "chara_card_v3")):
        payload = base64.b64encode(json.dumps(card_to_dict(card, spec), ensure_ascii=False).encode("utf-8"))
        chunks.insert(len(chunks) - 1, (b"tEXt", keyword.encode("latin-1") + b"\x00" + payload))
    return _png_bytes(chunks)
