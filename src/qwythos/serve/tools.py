"""OpenAI tool calling on /v1/chat/completions: what the model is shown, the grammar its reply must follow,
and the reply read back as ``tool_calls`` — whole or as streamed deltas.

One wire format for every mode (Hermes / Qwen style): a call is ``<tool_call>`` followed by a compact JSON
list ``[{"name": ..., "arguments": {...}}]``. The grammar (llguidance Lark, the list as a ``%json`` rule)
allows exactly:

- ``auto``: free text (not starting with ``<``) *or* the tag and a list of calls to the listed tools;
- ``required``: the tag and at least one call; a named function: the tag and one call to it;
- ``none``: no grammar and no tools in the prompt.

The name is always one of the listed tools and the arguments valid against its ``parameters`` schema, so
every call a client receives parses and validates (``parallel_tool_calls=false`` allows one call). Earlier
assistant calls are rendered back in the same format, so a model fine-tuned on its own traces learns it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from . import protocol as P

CALL_TAG = "<tool_call>"
NO_ARGUMENTS = {"type": "object", "properties": {}}


def instructions(tools: list[P.Tool]) -> str:
    """The system-prompt block describing the tools and the call format."""
    listed = "\n".join(
        json.dumps(t.function.model_dump(exclude_none=True), ensure_ascii=False) for t in tools
    )
    return (
        "# Tools\n\nYou may call one or more functions. Their signatures, as JSON schema:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        f'To call functions, reply with {CALL_TAG} followed by a JSON list: [{{"name": <function name>, '
        '"arguments": <arguments object>}]. Otherwise reply in plain text.'
    )


def render_call(calls: list[P.ToolCallWire]) -> str:
    """Earlier assistant tool calls as the model emits them."""
    listed = [{"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in calls]
    return CALL_TAG + json.dumps(listed, ensure_ascii=False, separators=(",", ":"))


def chat_messages(req: P.ChatCompletionRequest) -> list[dict[str, str]]:
    """The request's messages as chat-template input: developer -> system, tool calls and results inline,
    and the tool instructions in the system message (one is added in front when there is none)."""
    out = []
    for m in req.messages:
        role = "system" if m.role == "developer" else m.role
        text = m.text()
        if m.tool_calls:
            text += render_call(m.tool_calls)
        out.append({"role": role, "content": text})
    if req.tools and req.tool_mode() != "none":
        block = instructions(req.tools)
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def call_schema(tools: list[P.Tool], only: str | None, parallel: bool) -> dict:
    """The JSON schema of the list after the tag: calls to the listed tools (or to ``only``)."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                "arguments": t.function.parameters or NO_ARGUMENTS,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
        if only is None or t.function.name == only
    ]
    schema = {"type": "array", "items": {"anyOf": options}, "minItems": 1}
    if only is not None or not parallel:
        schema["maxItems"] = 1
    return schema


def grammar(req: P.ChatCompletionRequest) -> str | None:
    """The Lark grammar (llguidance dialect) the reply must follow; None when tools are off."""
    mode = req.tool_mode()
    if mode == "none":
        return None
    only = None if mode in ("auto", "required") else mode
    schema = {
        "x-guidance": {"whitespace_flexible": False},
        **call_schema(req.tools, only, req.parallel_tool_calls),
    }
    start = f'start: TEXT | "{CALL_TAG}" calls' if mode == "auto" else f'start: "{CALL_TAG}" calls'
    return (
        "%llguidance {}\n"
        f"{start}\n"
        "TEXT: /([^<](.|\\n)*)?/\n"
        f"calls: %json {json.dumps(schema, ensure_ascii=False)}\n"
    )


# ---------------------------------------------------------------- reading the reply back

_HEADER = re.compile(r'\{"name":"((?:[^"\\]|\\.)*)","arguments":')


@dataclass
class Call:
    id: str
    name: str
    arguments: str = ""  # the arguments object's JSON text, as generated (complete once the call closed)

    def wire(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class CallReader:
    """Generated text in, content or tool-call deltas out (the grammar guarantees the compact format, so a
    small scanner suffices: no partial-JSON guessing). ``feed`` returns the deltas new text completes."""

    text: str = ""  # everything fed
    calls: list[Call] = field(default_factory=list)
    kind: str | None = None  # "content" | "calls" once the first characters decide it
    _pos: int = 0  # scan position in text (calls mode)
    _state: str = "open"  # open -> header -> args -> close -> header ... -> done
    _depth: int = 0
    _in_string: bool = False
    _escape: bool = False

    def feed(self, delta: str) -> list[dict]:
        """Deltas in OpenAI stream shape: {"content": ...} or {"tool_calls": [...]} (possibly none)."""
        self.text += delta
        if self.kind is None:
            if CALL_TAG.startswith(self.text):
                return []  # still undecided (empty or a prefix of the tag)
            self.kind = "calls" if self.text.startswith(CALL_TAG) else "content"
            if self.kind == "content":
                return [{"content": self.text}]
            self._pos = len(CALL_TAG)
            return self._scan()
        if self.kind == "content":
            return [{"content": delta}] if delta else []
        return self._scan()

    def finish(self) -> list[dict]:
        """What is left when generation ends: undecided text (a bare tag prefix) is content."""
        if self.kind is None and self.text:
            self.kind = "content"
            return [{"content": self.text}]
        return []

    @property
    def content(self) -> str | None:
        return self.text if self.kind in ("content", None) else None

    def _scan(self) -> list[dict]:
        out: list[dict] = []
        fragment = ""
        t = self.text
        while self._pos < len(t):
            if self._state == "open":  # '[' before the first call, ',' between calls
                self._pos += 1
                self._state = "header"
            elif self._state == "header":
                m = _HEADER.match(t, self._pos)
                if m is None:
                    break  # the header is not complete yet
                name = json.loads(f'"{m.group(1)}"')
                self.calls.append(Call(f"call_{uuid.uuid4().hex[:24]}", name))
                index = len(self.calls) - 1
                out.append({"tool_calls": [{"index": index, **self.calls[-1].wire()}]})
                self._pos = m.end()
                self._state, self._depth, fragment = "args", 0, ""
            elif self._state == "args":
                c = t[self._pos]
                self._pos += 1
                fragment += c
                self._track(c)
                if self._depth == 0:
                    self._state = "close"
            elif self._state == "close":  # '}' of the call, then ',' or ']'
                c = t[self._pos]
                self._pos += 1
                if c == ",":
                    self._state = "header"
                elif c == "]":
                    self._state = "done"
            else:
                self._pos += 1  # nothing follows the list (the grammar ends there)
            if fragment and self._state != "args":
                out.append(self._args(fragment))
                fragment = ""
        if fragment:
            out.append(self._args(fragment))
        return out

    def _args(self, fragment: str) -> dict:
        self.calls[-1].arguments += fragment
        return {"tool_calls": [{"index": len(self.calls) - 1, "function": {"arguments": fragment}}]}

    def _track(self, c: str) -> None:
        if self._in_string:
            if self._escape:
                self._escape = False
            elif c == "\\":
                self._escape = True
            elif c == '"':
                self._in_string = False
        elif c == '"':
            self._in_string = True
        elif c in "{[":
            self._depth += 1
        elif c in "}]":
            self._depth -= 1


def finish_reason(reader: CallReader, reason: str | None) -> str | None:
    """OpenAI's ``tool_calls`` when the reply ended on complete calls."""
    return "tool_calls" if reader.kind == "calls" and reason == "stop" else reason
