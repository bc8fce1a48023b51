"""A chat dialogue with live steering: history, routing mode and gear, and the slash commands changing them.

Used by the terminal chat (``terminal.py``); the HTTP API is stateless and does not keep sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..inference.engine import Completion, Engine, Request, TokenEvent, parse_gear
from ..inference.sampling import GearSampling, SamplingParams
from ..inference.trace import switches

HELP = """commands:
  /gear reasoning=+1 [narrative=-0.5 ...]   nudge pathways (router logit offsets); /gear reset clears them
  /mode soft|top1|force=<pathway>           how the gate is applied
  /reset                                    forget the conversation
  /help                                     this text
  /quit                                     leave (Ctrl-D too)"""


@dataclass
class ReplySummary:
    tokens: int
    usage: dict[str, float]  # mean gate weight per pathway over the reply
    switches: int  # changes of the dominant pathway between consecutive tokens

    def line(self) -> str:
        shares = " · ".join(f"{p} {w:.0%}" for p, w in self.usage.items())
        return f"[{shares} · {self.switches} switches · {self.tokens} tokens]"


class ChatSession:
    def __init__(
        self,
        engine: Engine,
        params: SamplingParams,
        mode: str | None = None,
        gear: dict[str, float] | None = None,
        system: str | None = None,
        gear_sampling: GearSampling | None = None,
    ):
        self.engine, self.params, self.system = engine, params, system
        self.gear_sampling = gear_sampling
        self.mode = mode or engine.default_mode
        self.gear = dict(gear or {})
        engine.routing(self.mode, self.gear)  # validate now
        self.messages: list[dict[str, str]] = []

    def command(self, line: str) -> str:
        """Run a slash command; returns what to show. ValueError for a bad command or argument."""
        name, _, rest = line.strip().partition(" ")
        args = rest.split()
        if name == "/gear":
            if args == ["reset"]:
                self.gear = {}
            elif args:
                new = {**self.gear, **parse_gear(args)}
                self.engine.routing(self.mode, new)
                self.gear = new
            return "gear: " + (", ".join(f"{p}={v:+g}" for p, v in self.gear.items()) or "none")
        if name == "/mode":
            if len(args) != 1:
                raise ValueError("usage: /mode soft|top1|force=<pathway>")
            self.engine.routing(args[0], self.gear)
            self.mode = args[0]
            return f"mode: {self.mode}"
        if name == "/reset":
            self.messages = []
            return "conversation cleared"
        if name == "/help":
            return HELP
        raise ValueError(f"unknown command {name!r}; /help lists the commands")

    def prompt_ids(self) -> list[int]:
        """The conversation as prompt ids; the oldest turns are dropped when it would overflow the context."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        turns = list(self.messages)
        while True:
            ids = self.engine.encode_chat(head + turns)
            if len(ids) + self.params.max_new_tokens <= self.engine.max_len or len(turns) <= 1:
                return ids
            turns = turns[2:] if len(turns) > 2 else turns[-1:]

    def reply(self, text: str, on_event=None) -> tuple[Completion, ReplySummary]:
        self.messages.append({"role": "user", "content": text})
        routing, bias = self.engine.routing(self.mode, self.gear)
        try:
            request = Request(
                self.prompt_ids(),
                replace(self.params),
                gear_bias=bias,
                gear_sampling=self.gear_sampling,
                on_event=on_event,
            )
            done = self.engine.generate([request], routing)[0]
        except ValueError:
            self.messages.pop()
            raise
        self.messages.append({"role": "assistant", "content": done.text})
        return done, summarise(done, self.engine.pathways)


def summarise(done: Completion, pathways: list[str]) -> ReplySummary:
    if done.gates is None or not done.gates.numel():
        return ReplySummary(len(done.token_ids), dict.fromkeys(pathways, 0.0), 0)
    per_token = done.gates.float().mean(1)  # (n, P)
    usage = dict(zip(pathways, per_token.mean(0).tolist(), strict=True))
    return ReplySummary(len(done.token_ids), usage, switches(per_token.argmax(-1).tolist()))


def dominant(event: TokenEvent) -> int | None:
    return None if event.gates is None else int(torch.as_tensor(event.gates).float().mean(0).argmax())
