"""The chat-native record every stage reads and writes (curation makes them), and its rejected twin.

A Record is one conversation: ``messages`` in OpenAI chat form, the pathway it trains (with a confidence),
optional character ``spans`` that label parts of messages with their own pathway (a ``mixed`` sample), and
free ``meta``. The prompt is everything the user/system said; the response is what the assistant said:
curation scores, dedups and decontaminates the two separately.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
UNLABELLED = "unknown"  # a record's pathway before labelling
MIXED = "mixed"  # spans carry the pathways; any other label is one of the model's pathway names


@dataclass
class Record:
    id: str
    source: str
    messages: list[dict[str, str]]
    pathway: str = UNLABELLED  # a pathway name of the model (e.g. reasoning), MIXED, or UNLABELLED
    pathway_confidence: float = 0.0
    # character offsets into messages[message].content; the trainer derives per-token labels from these
    spans: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] != "assistant")

    @property
    def response(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] == "assistant")

    @property
    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Reject:
    """A record (or a raw line that never became one) dropped by ``step`` for ``reason``, with evidence."""

    id: str
    source: str
    step: str
    reason: str
    evidence: str = ""
    record: str = ""  # the record as JSON, or the raw input line when it could not be parsed


def reject(record: Record, step: str, reason: str, evidence: str = "") -> Reject:
    return Reject(record.id, record.source, step, reason, evidence, json.dumps(record.to_dict()))


def check_spans(record: Record) -> str | None:
    """None when the spans are valid, else what is wrong (an error message for a reader's reject)."""
    for s in record.spans:
        if not isinstance(s, dict) or not {"message", "start", "end", "pathway"} <= set(s):
            return f"span {s!r} needs message, start, end and pathway"
        m = s["message"]
        if not isinstance(m, int) or not 0 <= m < len(record.messages):
            return f"span {s!r}: message index out of range"
        n, a, b = len(record.messages[m]["content"]), s["start"], s["end"]
        if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b <= n):
            return f"span {s!r}: offsets outside 0..{n}"
    return None
