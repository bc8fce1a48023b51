"""Character cards: V1/V2/V3 parsing, exact round trips, PNG chunks, and each error."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from qwythos.dialogue.cards import (
    MAX_CARD_BYTES,
    CardError,
    card_to_dict,
    card_to_png,
    expand_macros,
    load_card_bytes,
    minimal_png,
    parse_card,
    read_card,
)

BOOK = {
    "name": "Harbour",
    "extensions": {},
    "entries": [
        {
            "keys": ["lamp"],
            "content": "Lamps cost 7 gold.",
            "extensions": {"selectiveLogic": 0, "match_whole_words": True},
            "enabled": True,
            "insertion_order": 10,
        }
    ],
}


def v2() -> dict:
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Mara",
            "description": "{{char}} keeps the lamp shop.",
            "personality": "gruff",
            "scenario": "",
            "first_mes": "Hello, {{user}}.",
            "mes_example": "<START>\n{{char}}: Seven gold.",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "Stay terse.",
            "alternate_greetings": ["Back again?"],
            "character_book": BOOK,
            "tags": ["shop"],
            "creator": "qa",
            "character_version": "1",
            "extensions": {"talkativeness": "0.5", "depth_prompt": {"prompt": "x", "depth": 4}, "zz": [1]},
            "unknown_data_key": 3,
        },
        "unknown_top": {"a": 1},
    }


def v3() -> dict:
    d = v2()
    d["spec"], d["spec_version"] = "chara_card_v3", "3.0"
    d["data"] |= {
        "nickname": "M",
        "group_only_greetings": ["All of you?"],
        "creation_date": 1700000000,
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    }
    return d


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def with_text(image: bytes, keyword: str, payload: bytes) -> bytes:
    body = keyword.encode() + b"\x00" + payload
    chunk = struct.pack(">I4s", len(body), b"tEXt") + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return image[:-12] + chunk + image[-12:]  # before IEND (12 bytes: empty chunk)


@pytest.mark.parametrize("make", [v2, v3])
def test_round_trip_keeps_unknown_keys(make):
    d = make()
    card = parse_card(d)
    assert card.name == "Mara" and card.alternate_greetings == ["Back again?"]
    assert card.extensions["zz"] == [1] and card.character_book == BOOK
    assert card_to_dict(card) == d


def test_sparse_v2_round_trips_without_adding_fields():
    d = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Bo"}}
    card = parse_card(d)
    assert card.description == "" and card.tags == []
    assert card_to_dict(card) == d


def test_edits_are_written_and_v1_mirror_kept_current():
    d = v2() | {"name": "Mara", "description": "old"}  # SillyTavern's top-level V1 mirror
    card = parse_card(d)
    card.name, card.extensions["new"] = "Mira", True
    out = card_to_dict(card)
    assert out["data"]["name"] == "Mira" and out["name"] == "Mira" and out["data"]["extensions"]["new"]


def test_v1_flat_card_is_upgraded_to_v2():
    card = parse_card({"name": "Old", "description": "d", "first_mes": "hi", "chat": "x"})
    assert card.spec == "chara_card_v2" and card.first_mes == "hi"
    out = card_to_dict(card)
    assert out["spec"] == "chara_card_v2" and out["data"]["name"] == "Old" and out["chat"] == "x"


def test_json_bytes_and_path(tmp_path):
    p = tmp_path / "mara.json"
    p.write_text(json.dumps(v3()))
    assert read_card(p).spec == "chara_card_v3"
    assert read_card(p.read_bytes()) == read_card(p)


def test_png_round_trip_keeps_image_chunks():
    image = minimal_png()
    first = load_card_bytes(card_to_png(parse_card(v2()), image))
    again_png = card_to_png(first, card_to_png(first, image))  # existing card chunks are replaced
    again = load_card_bytes(again_png)
    assert again == first and again.spec == "chara_card_v3"  # ccv3 wins
    kinds = [k for k, _ in png_chunks(again_png)]
    assert kinds == [b"IHDR", b"IDAT", b"tEXt", b"tEXt", b"IEND"]
    assert png_chunks(again_png)[:2] == png_chunks(image)[:2]
    chara = [b for k, b in png_chunks(again_png) if b.startswith(b"chara\x00")][0]
    assert json.loads(base64.b64decode(chara[6:]))["spec"] == "chara_card_v2"


def test_ccv3_wins_over_chara():
    old = v2()
    old["data"]["name"] = "Old"
    png = with_text(minimal_png(), "chara", base64.b64encode(json.dumps(old).encode()))
    png = with_text(png, "ccv3", base64.b64encode(json.dumps(v3()).encode()))
    assert load_card_bytes(png).name == "Mara"


def test_macros():
    text = "{{char}} greets {{User}}; <BOT> and <user>. {{CHAR}}"
    assert expand_macros(text, "Mara", "Ann") == "Mara greets Ann; Mara and Ann. Mara"
    assert expand_macros("{{char}}", r"a\1b", "u") == r"a\1b"  # no regex escapes in the name


def b64(obj) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "data, message",
    [
        (b"GIF89a....", "neither a PNG nor"),
        (b"\xff\xfe\x00", "neither a PNG nor"),
        (minimal_png(), "no 'chara' or 'ccv3'"),
        (with_text(minimal_png(), "chara", b"!!not base64!!"), "base64"),
        (with_text(minimal_png(), "chara", base64.b64encode(b"{oops")), "not valid JSON"),
        (with_text(minimal_png(), "chara", b64([1, 2])), "JSON object"),
        (b'{"spec": "chara_card_v2", "data": {"name": ""}}', "no name"),
        (b'{"spec": "chara_card_v2", "data": {"description": "x"}}', "no name"),
        (b'{"spec": "chara_card_v2", "data": {"name": "A", "alternate_greetings": "hi"}}', "list of strings"),
        (b'{"spec": "chara_card_v2", "data": {"name": "A", "tags": [1]}}', "data.tags"),
        (b'{"spec": "chara_card_v2", "data": {"name": 5}}', "data.name must be a string"),
        (b'{"spec": "chara_card_v9", "data": {"name": "A"}}', "unknown card spec"),
        (b'{"spec": "chara_card_v2", "data": {"name": "A", "extensions": []}}', "extensions"),
        (b"[1]", "JSON object"),
    ],
)
def test_errors(data, message):
    with pytest.raises(CardError, match=message):
        load_card_bytes(data)


def test_bad_crc():
    png = bytearray(card_to_png(parse_card(v2())))
    png[-20] ^= 0xFF  # inside the last tEXt chunk's payload
    with pytest.raises(CardError, match="bad CRC"):
        load_card_bytes(bytes(png))


def test_oversized_is_refused_before_parsing(tmp_path):
    with pytest.raises(CardError, match="MAX_CARD_BYTES"):
        load_card_bytes(b"{" + b" " * MAX_CARD_BYTES)
    p = tmp_path / "big.png"
    with p.open("wb") as f:
        f.truncate(MAX_CARD_BYTES + 1)
    with pytest.raises(CardError, match="MAX_CARD_BYTES"):
        read_card(p)
