"""The OpenAI-compatible wire format: request models (validated at the edge) and response builders.

Extensions beyond OpenAI: ``gear`` in a request steers the pathways (bias per pathway, mode, force);
``pathway_trace`` in every choice and stream chunk carries each generated token's gate. ``top_k`` and
``repetition_penalty`` follow vLLM's names.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# ---------------------------------------------------------------- requests

SEED_RANGE = (-(2**63), 2**63 - 1)  # what torch.Generator.manual_seed takes (n > 1 adds the choice index)


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string inside value holding a lone UTF-16 surrogate (valid JSON, not text)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
    elif isinstance(value, dict):
        for k, v in value.items():
            if (found := lone_surrogate(v, f"{path}.{k}" if path else str(k))) is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (found := lone_surrogate(v, f"{path}.{i}" if path else str(i))) is not None:
                return found
    return None


class WireModel(BaseModel):
    """A request body: every string must be text (a lone surrogate such as "\\ud800" is valid JSON only)."""

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if (path := lone_surrogate(data)) is not None:
            raise PydanticCustomError(
                "lone_surrogate",
                "holds a lone UTF-16 surrogate (e.g. \\ud800), which is not text; send UTF-8 text",
                {"param": path},
            )
        return data


class PathwaySamplingWire(WireModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)


class GearSamplingWire(WireModel):
    """Per-pathway sampling chosen per token by the gate: ``{"per_pathway": {"reasoning": {"temperature": 0},
    "narrative": {"temperature": 0.8, "top_p": 0.95}}, "policy": "argmax"}``."""

    model_config = ConfigDict(extra="forbid")
    per_pathway: dict[str, PathwaySamplingWire] = Field(min_length=1)
    policy: Literal["argmax", "blend"] = "argmax"


class Gear(WireModel):
    """Steer the pathways for this request: ``{"bias": {"reasoning": 1.5}, "mode": "top1"}``."""

    model_config = ConfigDict(extra="forbid")
    bias: dict[str, float] = Field(default_factory=dict)  # router logit offset per pathway
    mode: Literal["soft", "top1", "force"] | None = None  # None: the model's default mode
    force: str | None = None  # the pathway for mode="force"
    sampling: GearSamplingWire | None = None  # overrides the request's temperature/top_p/top_k per token

    @field_validator("bias")
    @classmethod
    def _bounded(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if not -50 <= value <= 50:
                raise ValueError(f"gear bias for {name!r} ({value}) must be in [-50, 50]")
        return v

    @model_validator(mode="after")
    def _force(self) -> Gear:
        if (self.mode == "force") != (self.force is not None):
            raise ValueError('gear.mode "force" needs gear.force=<pathway>, and force needs mode "force"')
        return self

    def routing_mode(self) -> str | None:
        return f"force={self.force}" if self.mode == "force" else self.mode


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(WireModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, metadata, ...)
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)  # vLLM's name; 0 or -1 = off
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    gear: Gear | None = None
    pathway_trace: bool = True  # include the per-token gate trace in choices and chunks
    ignore_eos: bool = False  # vLLM's name: generate max_tokens even past end-of-sequence (benchmarks)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 16:
            raise ValueError(f"at most 16 stop sequences, got {len(stops)}")
        return [s for s in stops if s]

    @model_validator(mode="after")
    def _unsupported(self) -> SamplingFields:
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError(
                "presence_penalty and frequency_penalty are not supported; use repetition_penalty (e.g. 1.1)"
            )
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and (not v or any(isinstance(p, list | str) and not p for p in v)):
            raise ValueError("prompt is empty: send a string, a list of strings or a list of token-id lists")
        return v


class FunctionCallWire(BaseModel):
    name: str
    arguments: str  # a JSON object, as text (OpenAI's shape)

    @field_validator("arguments")
    @classmethod
    def _json(cls, v: str) -> str:
        try:
            parsed = json.loads(v)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"function.arguments is not JSON ({e.msg}): send the arguments object as text"
            ) from None
        if not isinstance(parsed, dict):
            raise ValueError("function.arguments must be a JSON object")
        return v


class ToolCallWire(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallWire


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallWire] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool result: the call it answers

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError('a message with role "tool" needs tool_call_id (the id of the call it answers)')
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            parts = []
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported: {'type': 'text', 'text': ...}")
                parts.append(part["text"])
            return "".join(parts)
        return self.content or ""


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON schema of the arguments object (None: no arguments)
    strict: bool | None = None  # accepted; calls are always grammar-constrained

    @field_validator("parameters")
    @classmethod
    def _object(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type", "object") != "object":
            raise ValueError(
                f'function.parameters must describe an object (type "object"), not {v["type"]!r}'
            )
        return None if v is None else {"type": "object", **v}


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: ToolFunction


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None  # text | json_object | json_schema (grammar-constrained)
    tools: list[Tool] | None = None  # calls grammar-constrained to these (serve/tools.py)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None  # None: auto with tools
    parallel_tool_calls: bool = True  # False: at most one call per reply
    # the deprecated pre-tools names: refused with a 400 (handlers), never silently ignored
    functions: list[Any] | None = None
    function_call: Any = None

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) < len(names):
            raise PydanticCustomError("tools", "tools: function names must be unique", {"param": "tools"})
        mode = self.tool_mode()
        if mode not in ("none", "auto") and not names:
            raise PydanticCustomError(
                "tool_choice", "tool_choice {mode!r} needs tools", {"param": "tool_choice", "mode": mode}
            )
        if mode not in ("none", "auto", "required") and mode not in names:
            raise PydanticCustomError(
                "tool_choice",
                "tool_choice names {mode!r}, which is not in tools ({names})",
                {"param": "tool_choice", "mode": mode, "names": ", ".join(names)},
            )
        if mode != "none" and names and (self.response_format or {}).get("type", "text") != "text":
            raise PydanticCustomError(
                "response_format",
                "response_format with tools: send tool_choice 'none' for a structured reply, or drop one",
                {"param": "response_format"},
            )
        return self

    def tool_mode(self) -> str:
        """'none', 'auto', 'required' or the one function's name the reply must call."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        if self.tool_choice is None:
            return "auto" if self.tools else "none"
        return self.tool_choice

    def unsupported(self) -> str | None:
        """The first field asking for something this server does not do (None: all is supported)."""
        if self.functions:
            return "functions"
        if self.function_call not in (None, "none"):
            return "function_call"
        return None

    def json_schema(self) -> dict | None:
        """The schema response_format asks the reply to follow ({} for any JSON object; None: free text)."""
        rf = self.response_format
        if rf is None or rf.get("type") == "text":
            return None
        if rf.get("type") == "json_object":
            return {}
        if rf.get("type") == "json_schema":
            spec = rf.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise ValueError("response_format.json_schema: give {'name': ..., 'schema': {...}}")
            return spec.get("schema") or {}
        raise ValueError(
            f"response_format.type {rf.get('type')!r}: use 'text', 'json_object' or 'json_schema'"
        )


class TokenizeRequest(WireModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send exactly one of prompt or messages")
        return self


class DetokenizeRequest(WireModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    tokens: list[int]


# ---------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def trace_entry(token_id: int, text: str, gate: list[float] | None, pathways: list[str]) -> dict:
    """One generated token's gate (mean over layers) and its dominant pathway."""
    if gate is None:
        return {"token_id": token_id, "text": text, "pathway": None, "gate": None}
    best = max(range(len(gate)), key=gate.__getitem__)
    return {
        "token_id": token_id,
        "text": text,
        "pathway": pathways[best],
        "gate": {p: round(w, 4) for p, w in zip(pathways, gate, strict=True)},
    }


def legacy_logprobs(tokens: list[str], token_logprobs: list, top: list, offset: int) -> dict:
    """The /v1/completions logprobs object (what lm-evaluation-harness reads)."""
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def chat_logprob(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    """One entry of a chat choice's ``logprobs.content``."""

    def one(t: str, lp: float) -> dict:
        return {"token": t, "logprob": lp, "bytes": list(t.encode())}

    return {**one(token, logprob), "top_logprobs": [one(t, lp) for t, lp in top]}
