"""Tool calling's pieces: the grammar (what it lets a model emit, through llguidance on a real tokenizer), the
reader that turns the text back into OpenAI tool calls (whole and one character at a time), the prompt."""

from __future__ import annotations

import json

import pytest

from qwythos.inference.constrain import GrammarConstraint
from qwythos.model.base import load_tokenizer
from qwythos.serve import protocol as P
from qwythos.serve import tools as T

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
STATE = {"type": "function", "function": {"name": "game_state"}}  # no parameters: {}


def request(**kw) -> P.ChatCompletionRequest:
    return P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw)


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return load_tokenizer(tiny_base)


def accepts(tokenizer, grammar: str, text: str) -> bool:
    c = GrammarConstraint.lark(tokenizer, grammar)
    for t in tokenizer.encode(text, add_special_tokens=False):
        if not c.matcher.consume_token(t):
            return False
    return c.matcher.is_accepting()


CALL = '<tool_call>[{"name":"get_weather","arguments":{"city":"Paris","days":2}}]'
TWO = CALL[:-1] + ',{"name":"game_state","arguments":{}}]'


@pytest.mark.parametrize(
    ("choice", "text", "ok"),
    [
        ("auto", "It is sunny.", True),
        ("auto", "", True),
        ("auto", CALL, True),
        ("auto", TWO, True),
        ("auto", '<tool_call>[{"name":"get_time","arguments":{}}]', False),  # not a listed tool
        ("auto", '<tool_call>[{"name":"get_weather","arguments":{"days":2}}]', False),  # city required
        ("auto", '<tool_call>[{"name":"get_weather","arguments":{"city":"P","days":0}}]', False),  # minimum
        ("auto", '<tool_call>[{"name": "get_weather", "arguments": {"city":"P"}}]', False),  # not compact
        ("required", "It is sunny.", False),
        ("required", CALL, True),
        ("required", "<tool_call>[]", False),
        ({"type": "function", "function": {"name": "game_state"}}, CALL, False),
        (
            {"type": "function", "function": {"name": "game_state"}},
            '<tool_call>[{"name":"game_state","arguments":{}}]',
            True,
        ),
    ],
)
def test_the_grammar_lets_through_only_calls_to_listed_tools_with_valid_arguments(
    tokenizer, choice, text, ok
):
    g = T.grammar(request(tools=[WEATHER, STATE], tool_choice=choice))
    assert accepts(tokenizer, g, text) is ok


def test_parallel_tool_calls_false_allows_one_call_and_none_has_no_grammar(tokenizer):
    one = T.grammar(request(tools=[WEATHER, STATE], parallel_tool_calls=False))
    assert accepts(tokenizer, one, CALL) and not accepts(tokenizer, one, TWO)
    assert T.grammar(request(tools=[WEATHER], tool_choice="none")) is None
    assert T.grammar(request()) is None


def feed_all(text: str, step: int | None) -> tuple[T.CallReader, list[dict]]:
    reader, deltas = T.CallReader(), []
    pieces = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
    for p in pieces:
        deltas += reader.feed(p)
    deltas += reader.finish()
    return reader, deltas


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_the_reader_turns_calls_into_openai_tool_calls_whole_or_streamed(step):
    reader, deltas = feed_all(TWO, step)
    assert reader.content is None and T.finish_reason(reader, "stop") == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in reader.calls] == [
        ("get_weather", {"city": "Paris", "days": 2}),
        ("game_state", {}),
    ]
    # the deltas reassemble the calls the OpenAI way: a header with id and name, then argument fragments
    calls: dict[int, dict] = {}
    for d in deltas:
        for tc in d["tool_calls"]:
            if "id" in tc:
                calls[tc["index"]] = {"id": tc["id"], "name": tc["function"]["name"], "arguments": ""}
            calls[tc["index"]]["arguments"] += tc["function"]["arguments"]
    assert [c["arguments"] for c in calls.values()] == [c.arguments for c in reader.calls]
    assert len({c["id"] for c in calls.values()}) == 2


@pytest.mark.parametrize("step", [None, 1, 4])
def test_text_stays_content_and_a_cut_call_keeps_what_was_generated(step):
    reader, deltas = feed_all("Sunny, with <b>wind</b>.", step)
    assert reader.content == "Sunny, with <b>wind</b>." == "".join(d["content"] for d in deltas)
    assert T.finish_reason(reader, "stop") == "stop"
    cut, _ = feed_all(CALL[:-12], step)  # max_tokens ran out inside the arguments
    assert cut.calls[0].name == "get_weather" and cut.calls[0].arguments == '{"city":"Paris"'
    assert T.finish_reason(cut, "length") == "length"
    undecided, deltas = feed_all("<tool", step)
    assert undecided.content == "<tool" and "".join(d["content"] for d in deltas) == "<tool"


def test_strings_holding_braces_and_escapes_do_not_end_the_arguments_early():
    text = '<tool_call>[{"name":"get_weather","arguments":{"city":"a}\\"]{b"}}]'
    reader, _ = feed_all(text, 1)
    assert json.loads(reader.calls[0].arguments) == {"city": 'a}"]{b'}


def test_the_prompt_lists_the_tools_and_renders_earlier_calls_and_results():
    req = P.ChatCompletionRequest(
        model="m",
        tools=[WEATHER],
        messages=[
            {"role": "system", "content": "You are Mira."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    )
    msgs = T.chat_messages(req)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[0]["content"].startswith("You are Mira.") and '"name": "get_weather"' in msgs[0]["content"]
    assert msgs[2]["content"] == '<tool_call>[{"name":"get_weather","arguments":{"city":"Paris"}}]'
    assert msgs[3]["content"] == "sunny"
    assert (
        T.chat_messages(request(tools=[WEATHER], tool_choice="none"))[0]["role"] == "user"
    )  # none: no tools


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "object",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "pattern"),
    ],
)
def test_tool_fields_that_cannot_be_honoured_are_refused(kw, field):
    with pytest.raises(ValueError, match=field):
        request(**kw)
