"""KV-cached generation for pathway models (native or loaded from a Mixtral export), with gate traces.

``Engine.generate`` decodes a batch of requests together: prompts are left-padded into one KV cache,
finished rows leave the batch, and every generated token carries its per-layer gate weights (L, P).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..model.block import Routing
from ..model.transformer import PathwayLM
from .sampling import SamplingParams, make_generator, sample_token

SOFT = Routing()
TokenCallback = Callable[[int, str, torch.Tensor | None], None]  # (token_id, text_delta, gates (L, P))


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    gear_bias: list[float] | None = None  # per-pathway logit offsets for this request
    on_token: TokenCallback | None = None  # streaming: called for every generated token


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (eos or stop string) | "length"
    gates: torch.Tensor | None  # (n_generated, L, P) gate weights, with trace
    prompt_tokens: int

    def summary(self) -> torch.Tensor | None:
        """One gate vector per token (mean over layers): (n_generated, P)."""
        return None if self.gates is None else self.gates.mean(1)


class TextStream:
    """Incremental detokenisation with stop strings: emits only text that can no longer change."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0
        self.text = ""
        self.stopped = False

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for s in self.stop if (i := full.find(s, max(0, self.emitted - len(s)))) != -1]
        if hits:
            self.text, self.stopped = full[: min(hits)], True
            return self._flush(len(self.text))
        self.text = full
        safe = len(full.rstrip("\ufffd"))  # an incomplete UTF-8 sequence decodes to U+FFFD
        for s in self.stop:  # hold back a tail that may still grow into a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if full[:safe].endswith(s[:k]):
                    safe -= k
                    break
        return self._flush(safe)

    def finish(self) -> str:
        return self._flush(len(self.text))

    def _flush(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        delta, self.emitted = self.text[self.emitted : upto], upto
        return delta


def eos_ids(model: PathwayLM, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    cfg = model.config.arch.eos_token_id
    ids |= set(cfg) if isinstance(cfg, list) else {cfg}
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        ids.add(end)
    return {i for i in ids if i is not None}


class Engine:
    def __init__(self, model: PathwayLM, tokenizer, mode: str = "soft"):
        self.model, self.tokenizer, self.default_mode = model.eval(), tokenizer, mode
        self.eos = eos_ids(model, tokenizer)
        self.max_len = model.config.arch.max_position_embeddings

    @property
    def pathways(self) -> list[str]:
        return self.model.pathway_names

    def routing(
        self, mode: str | None = None, gear: dict[str, float] | None = None
    ) -> tuple[Routing, list[float]]:
        """Routing for ``mode`` ('soft', 'top1', 'force=<name>'; None = the model's default) and a gear bias
        list from {pathway: offset}; unknown pathways and modes are errors naming the valid ones."""
        return parse_routing(mode or self.default_mode, self.pathways), gear_vector(gear, self.pathways)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead")
        return list(
            self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )

    @torch.inference_mode()
    def generate(
        self, requests: list[Request], routing: Routing = SOFT, trace: bool = True
    ) -> list[Completion]:
        if not requests:
            return []
        for r in requests:
            if not r.prompt_ids:
                raise ValueError("empty prompt: send at least one token")
            if len(r.prompt_ids) + r.params.max_new_tokens > self.max_len:
                raise ValueError(
                    f"prompt ({len(r.prompt_ids)} tokens) + max_new_tokens ({r.params.max_new_tokens}) "
                    f"exceeds the model's context of {self.max_len} tokens"
                )
        B = len(requests)
        lens = [len(r.prompt_ids) for r in requests]
        T0, max_new = max(lens), max(r.params.max_new_tokens for r in requests)
        ids = torch.full((B, T0), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        valid = torch.zeros(B, T0 + max_new, dtype=torch.bool)
        for b, r in enumerate(requests):
            ids[b, T0 - lens[b] :] = torch.tensor(r.prompt_ids)
            valid[b, T0 - lens[b] :] = True
        padded = min(lens) != T0
        pos = (valid[:, :T0].long().cumsum(1) - 1).clamp_min(0)
        bias = torch.tensor(
            [r.gear_bias or [0.0] * len(self.pathways) for r in requests], dtype=torch.float32
        )
        has_bias = bool(bias.abs().sum() > 0)

        def routed(rows_bias: torch.Tensor) -> Routing:
            if not has_bias:
                return routing
            return Routing(routing.mode, routing.force, rows_bias, routing.temperature)

        streams = [TextStream(self.tokenizer, r.params.stop) for r in requests]
        gens = [make_generator(r.params.seed) for r in requests]
        contexts = [list(r.prompt_ids) for r in requests]
        gates: list[list[torch.Tensor]] = [[] for _ in requests]
        finish: list[str | None] = [None] * B
        for b, r in enumerate(requests):
            if r.params.max_new_tokens == 0:
                finish[b] = "length"

        cache = self.model.new_cache(B, T0 + max_new)
        out = self.model(
            ids,
            position_ids=pos,
            key_valid=valid[:, :T0] if padded else None,
            cache=cache,
            routing=routed(bias),
            last_only=True,
            trace=trace,
        )
        logits, layer_gates, next_pos = out.logits[:, -1].float(), out.gates, pos[:, -1] + 1
        active, keep = list(range(B)), [b for b in range(B) if finish[b] is None]
        slot = T0  # the cache slot the next token is written to
        while keep:
            if len(keep) < len(active):  # rows left the batch: shrink every per-row tensor
                k = torch.tensor([active.index(b) for b in keep])
                cache.select(k)
                logits, next_pos, valid, bias = logits[k], next_pos[k], valid[k], bias[k]
                layer_gates = None if layer_gates is None else layer_gates[k]
            active = keep
            next_ids = []
            for i, b in enumerate(active):
                r = requests[b]
                tok = sample_token(logits[i], r.params, torch.tensor(contexts[b]), gens[b])
                contexts[b].append(tok)
                g = None if layer_gates is None else layer_gates[i, -1]
                if g is not None:
                    gates[b].append(g)
                if tok in self.eos and not r.params.ignore_eos:
                    finish[b] = "stop"
                    streams[b].ids.append(tok)  # counted as generated, not decoded into the text
                    delta = streams[b].finish()
                else:
                    delta = streams[b].add(tok)
                    if streams[b].stopped:
                        finish[b] = "stop"
                    elif len(streams[b].ids) >= r.params.max_new_tokens:
                        finish[b], delta = "length", delta + streams[b].finish()
                if r.on_token is not None:
                    r.on_token(tok, delta, g)
                next_ids.append(tok)
            keep = [b for b in active if finish[b] is None]
            if not keep:
                break
            valid[:, slot] = True
            slot += 1
            out = self.model(
                torch.tensor(next_ids)[:, None],
                position_ids=next_pos[:, None],
                key_valid=valid[:, :slot] if padded else None,
                cache=cache,
                routing=routed(bias),
                last_only=True,
                trace=trace,
            )
            logits, layer_gates, next_pos = out.logits[:, -1].float(), out.gates, next_pos + 1
        return [
            Completion(
                token_ids=streams[b].ids,
                text=streams[b].text,
                finish_reason=finish[b] or "length",
                gates=(torch.stack(gates[b]) if gates[b] else torch.empty(0)) if trace else None,
                prompt_tokens=lens[b],
            )
            for b in range(B)
        ]


def parse_routing(mode: str, pathways: list[str]) -> Routing:
    """'soft' | 'top1' | 'force=<pathway>' -> Routing."""
    if mode.startswith("force="):
        name = mode.split("=", 1)[1]
        if name not in pathways:
            raise ValueError(f"--mode {mode}: unknown pathway {name!r}; this model's pathways are {pathways}")
        return Routing("force", force=pathways.index(name))
    if mode not in ("soft", "top1"):
        raise ValueError(f"--mode {mode!r} must be soft, top1 or force=<pathway> (pathways: {pathways})")
    return Routing(mode)


def gear_vector(gear: dict[str, float] | None, pathways: list[str]) -> list[float]:
    vec = [0.0] * len(pathways)
    for name, value in (gear or {}).items():
        if name not in pathways:
            raise ValueError(f"gear for unknown pathway {name!r}; this model's pathways are {pathways}")
        vec[pathways.index(name)] = float(value)
    return vec


def parse_gear(items: list[str]) -> dict[str, float]:
    """['reasoning=+1.5', ...] -> {'reasoning': 1.5}."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--gear {item!r}: expected <pathway>=<number>, e.g. reasoning=+1.5") from None
    return out
