"""The terminal chat driven through text streams: streaming, colours, legend, summaries, /gear commands."""

from __future__ import annotations

import io
import re

import pytest

from conftest import randomise
from qwythos.inference.engine import Engine
from qwythos.inference.sampling import SamplingParams
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model
from qwythos.serve.sessions import ChatSession
from qwythos.serve.terminal import run_chat

SUMMARY = re.compile(r"\[reasoning (\d+)% · narrative (\d+)% · \d+ switches · \d+ tokens\]")


@pytest.fixture(scope="module")
def engine(tiny_base):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    return Engine(randomise(model), load_tokenizer(folder))


def chat(engine, lines: str, color: bool) -> tuple[int, str]:
    out = io.StringIO()
    n = run_chat(engine, io.StringIO(lines), out, SamplingParams(max_new_tokens=6, ignore_eos=True), color)
    return n, out.getvalue()


def test_no_color_marks_pathways_and_summarises_each_reply(engine):
    n, text = chat(
        engine, "Tell me a story\n/gear reasoning=+30\nAnd then?\n/quit\nnever read\n", color=False
    )
    assert n == 2 and "\x1b[" not in text
    assert text.startswith("pathways: [reasoning]  [narrative]")
    assert "gear: reasoning=+30" in text
    shares = [int(m.group(1)) for m in SUMMARY.finditer(text)]
    assert len(shares) == 2 and shares[1] > 90  # the gear moved the second reply to reasoning
    assert "[reasoning]" in text.split("gear: reasoning=+30")[1]


def test_color_output_and_bad_commands(engine):
    n, text = chat(engine, "/mode poetry\n/gear x\n/nope\n/mode top1\nhello\n", color=True)
    assert n == 1 and "\x1b[36m■ reasoning" in text and "\x1b[0m" in text
    assert text.count("error:") == 3 and "mode: top1" in text
    assert re.search(r"bot> (\x1b\[3[56]m[^\x1b]*\x1b\[0m)+\n", text)  # every token coloured


def test_session_keeps_history_and_resets(engine):
    s = ChatSession(engine, SamplingParams(max_new_tokens=3, ignore_eos=True))
    s.reply("hi")
    s.reply("again")
    assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]
    assert s.command("/reset") == "conversation cleared" and s.messages == []
    with pytest.raises(ValueError, match="unknown pathway"):
        s.command("/gear poetry=1")
