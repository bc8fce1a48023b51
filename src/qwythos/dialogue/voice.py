"""Speaking one NPC reply: a single-sequence decode with a reused prompt prefix, free (voiced) spans and
pinned (forced) spans.

A dialogue prompt starts with a stable prefix (the card and the constant lore); its KV cache is kept between
turns, so a turn processes only the volatile tail and the reply, however long the conversation. A reply is a
plan of parts: ``Free`` spans are sampled with a narrative gear bias and per-pathway sampling; ``Pinned``
spans are a verified value's exact tokens, fed in with the gate forced to reasoning on them (a per-token gear
bias), so the trace shows reasoning on every stated fact. Sampling is ``inference.sampling``'s, the one path.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..inference.engine import Engine, TextStream, parse_routing
from ..inference.sampling import GearSampling, SamplingParams, make_generator, sample_token
from ..model.block import Routing
from ..model.cache import BatchCache

NOTHING = torch.empty(0, dtype=torch.long)
FORCE_BIAS = 50.0  # router logit offset that makes a pathway's gate weight ~1 (softmax of +50)


@dataclass
class Free:
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)  # e.g. a sentence end, for a short lead-in


@dataclass
class Pinned:
    text: str  # a verified value, stated exactly


@dataclass
class Spoken:
    text: str
    token_ids: list[int]
    gates: torch.Tensor  # (n, P) mean gate over layers per reply token
    pinned: list[bool]  # per reply token: fed in (True) or sampled
    prompt_tokens: int
    processed_tokens: int  # prompt tokens run through the model this turn (the reused prefix excluded)
    prefix_reused: int  # prompt tokens whose KV came from an earlier turn
    finish_reason: str


class PrefixCache:
    """KV caches of recent stable prefixes (LRU), keyed by their token ids."""

    def __init__(self, capacity: int = 16):
        self.capacity, self.items = capacity, OrderedDict()

    @staticmethod
    def key(ids: list[int], mode: str = "soft") -> str:
        """The ids and the routing mode they ran under (the KV depends on how the gate blended)."""
        return mode + ":" + hashlib.sha1(torch.tensor(ids, dtype=torch.int64).numpy().tobytes()).hexdigest()

    def get(self, ids: list[int], mode: str = "soft") -> BatchCache | None:
        k = self.key(ids, mode)
        if k in self.items:
            self.items.move_to_end(k)
            return self.items[k]
        return None

    def put(self, ids: list[int], cache: BatchCache, mode: str = "soft") -> None:
        k = self.key(ids, mode)
        self.items[k] = cache
        self.items.move_to_end(k)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


def clone(cache: BatchCache, model, headroom: int) -> BatchCache:
    """A copy of a one-row cache with room for ``headroom`` more slots (the stored prefix stays untouched)."""
    n = cache.length
    out = model.new_cache(1, n + headroom)
    out.k[:, :, :, :n], out.v[:, :, :, :n], out.valid[:, :n] = cache.k[..., :n, :], cache.v[..., :n, :], True
    out.length = n
    return out


class Voice:
    def __init__(self, engine: Engine, prefixes: PrefixCache | None = None):
        self.engine, self.model = engine, engine.model
        self.prefixes = prefixes or PrefixCache()
        self.P = len(engine.pathways)

    def _bias(self, vec: list[float], T: int) -> torch.Tensor:
        return torch.tensor(vec, dtype=torch.float32).expand(1, T, self.P).clone()  # (1, T, P)

    def _routing(self, mode: str, bias: torch.Tensor) -> Routing:
        """'soft' | 'top1' | 'force=<pathway>' with this forward's gear bias."""
        base = parse_routing(mode, self.engine.pathways)
        return Routing(base.mode, base.force, bias)

    def _forward(
        self, ids: list[int], cache: BatchCache, bias: torch.Tensor, mode: str, last_only: bool = True
    ):
        cache.reserve(len(ids), torch.ones(1, len(ids), dtype=torch.bool))
        return self.model(
            torch.tensor([ids]),
            cache=cache,
            routing=self._routing(mode, bias),
            last_only=last_only,
            trace=True,
        )

    @torch.inference_mode()
    def speak(
        self,
        prefix_ids: list[int],
        tail_ids: list[int],
        plan: list[Free | Pinned],
        gear_bias: list[float],
        params: SamplingParams,
        gear_sampling: GearSampling | None = None,
        on_token: Callable[[dict], None] | None = None,
        mode: str | None = None,
    ) -> Spoken:
        """Decode ``plan`` after prefix + tail. ``gear_bias`` (P,) steers the free spans; pinned spans force
        the reasoning pathway (the first pathway named 'reasoning', else pathway 0). ``on_token`` gets
        {"delta", "pinned", "gate"} per reply token as it is decided (streaming). ``mode``: the routing
        mode (soft or top1; None: the model's default)."""
        mode = mode or self.engine.default_mode
        budget = sum(p.max_new_tokens if isinstance(p, Free) else 64 for p in plan)
        stored = self.prefixes.get(prefix_ids, mode) if prefix_ids else None
        processed = len(tail_ids)
        if stored is None:
            cache = self.model.new_cache(1, len(prefix_ids) + len(tail_ids) + budget + 8)
            if prefix_ids:
                self._forward(prefix_ids, cache, self._bias([0.0] * self.P, len(prefix_ids)), mode)
                self.prefixes.put(prefix_ids, clone(cache, self.model, 0), mode)
            processed += len(prefix_ids)
            reused = 0
        else:
            cache, reused = clone(stored, self.model, len(tail_ids) + budget + 8), len(prefix_ids)
        out = self._forward(tail_ids, cache, self._bias(gear_bias, len(tail_ids)), mode)
        logits, gate = out.logits[0, -1].float(), out.gates[0, -1].mean(0)

        pathways = self.engine.pathways
        force = [0.0] * self.P
        force[pathways.index("reasoning") if "reasoning" in pathways else 0] = FORCE_BIAS
        generator = make_generator(params.seed)
        context = list(prefix_ids) + list(tail_ids)
        ids: list[int] = []
        gates: list[torch.Tensor] = []
        pinned: list[bool] = []
        finish = "length"
        shown = [""]  # the reply text streamed so far

        def emit() -> None:
            if on_token is None:
                return
            text = self.engine.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
            delta, shown[0] = text[len(shown[0]) :], text
            gate = {p: round(float(x), 4) for p, x in zip(pathways, gates[-1].tolist(), strict=True)}
            on_token({"delta": delta, "pinned": pinned[-1], "gate": gate})

        for part in plan:
            if isinstance(part, Pinned):
                piece = self.engine.tokenizer.encode(part.text, add_special_tokens=False)
                if not piece:
                    continue
                out = self._forward(piece, cache, self._bias(force, len(piece)), mode, last_only=False)
                for tok, g in zip(piece, out.gates[0].mean(1), strict=True):  # a pinned token's own gate
                    ids.append(tok)
                    gates.append(g)
                    pinned.append(True)
                    emit()
                context += piece
                logits, gate = out.logits[0, -1].float(), out.gates[0, -1].mean(0)
                continue
            if finish == "stop":  # the model ended its reply: later free spans are skipped, pins still stated
                continue
            stream = TextStream(self.engine.tokenizer, part.stop)
            for _ in range(part.max_new_tokens):
                p = params if gear_sampling is None else gear_sampling.params_for(params, gate, pathways)
                ctx = (
                    torch.tensor(context) if p.repetition_penalty != 1.0 else torch.empty(0, dtype=torch.long)
                )
                tok = sample_token(logits, p, ctx, generator)
                if tok in self.engine.eos:
                    finish = "stop"
                    break
                ids.append(tok)
                gates.append(gate)  # the engine's convention: the gate of the position that chose the token
                pinned.append(False)
                emit()
                context.append(tok)
                stream.add(tok)
                out = self._forward([tok], cache, self._bias(gear_bias, 1), mode)
                logits, gate = out.logits[0, -1].float(), out.gates[0, -1].mean(0)
                if stream.stopped:
                    break
        processed += len(ids)
        text = self.engine.tokenizer.decode(ids, skip_special_tokens=True)
        return Spoken(
            text=text,
            token_ids=ids,
            gates=torch.stack(gates) if gates else torch.zeros(0, self.P),
            pinned=pinned,
            prompt_tokens=len(prefix_ids) + len(tail_ids),
            processed_tokens=processed,
            prefix_reused=reused,
            finish_reason=finish,
        )
