"""Per-token texts of a trace: byte-level tokens that split a character never show U+FFFD."""

from __future__ import annotations

from transformers import AutoTokenizer

from conftest import make_tokenizer
from qwythos.inference.trace import token_texts


def test_token_texts_hold_back_split_characters_and_join_to_the_decode(tmp_path):
    make_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = "Mira sells lamps — café 🦊 ünïcode"
    ids = tok.encode(text, add_special_tokens=False)
    assert "\ufffd" in "".join(tok.decode([t]) for t in ids)  # one token at a time splits characters
    pieces = token_texts(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # a token that only starts a character adds nothing yet
