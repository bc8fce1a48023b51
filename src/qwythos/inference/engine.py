"""KV-cached generation for pathway models (native or loaded from a Mixtral export), with gate traces.

A ``DecodeBatch`` decodes requests that share one routing mode: new requests are prefilled together (left
padded) and merged into the running KV cache, every step decodes one token for each row, finished or
cancelled rows leave at once. ``Engine.stream`` / ``generate`` decode a list of requests, at most
``max_batch`` rows at a time, refilling the batch as rows finish; ``scheduler.Scheduler`` feeds batches from
a queue of live requests (the server). Every generated token carries its per-layer gate weights (L, P).
Prefill runs the model's forward; on CPU each decode step runs the native step (``native.py``), which
computes the same function in C++ at about twice the speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..model.block import Routing
from ..model.cache import BatchCache
from ..model.transformer import PathwayLM
from . import native, stream_plan
from .sampling import GearSampling, SamplingParams, make_generator, sample_token, top_logprobs

SOFT = Routing()
TokenCallback = Callable[[int, str, torch.Tensor | None], None]  # (token_id, text_delta, gates (L, P))


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token_id, logprob), most likely first


@dataclass
class TokenEvent:
    """One generated token, as streamed to ``Request.on_event``."""

    token_id: int
    delta: str  # text that became final with this token (may be empty: held back for a stop string)
    piece: str  # this token's own text
    gates: torch.Tensor | None  # (L, P)
    logprob: TokenLogprob | None
    finish_reason: str | None  # set on the last token of the request


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    gear_bias: list[float] | None = None  # per-pathway logit offsets for this request
    gear_sampling: GearSampling | None = None  # sampling settings chosen per token by the gate
    on_token: TokenCallback | None = None  # streaming: called for every generated token
    on_event: Callable[[TokenEvent], None] | None = None  # streaming with pieces and logprobs
    cancelled: bool = False  # set from any thread: the request leaves its batch at the next step
    constraint: object | None = None  # a GrammarConstraint (constrain.py): only tokens its grammar allows


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (eos or stop string) | "length" | "abort" (cancelled)
    gates: torch.Tensor | None  # (n_generated, L, P) gate weights, with trace
    prompt_tokens: int
    pieces: list[str] = field(default_factory=list)  # each generated token's own text
    logprobs: list[TokenLogprob] | None = None  # with params.logprobs
    prompt_logprobs: list[TokenLogprob | None] | None = None  # with params.prompt_logprobs; first is None

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
        self.full = ""
        self.stopped = False

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        self.full = full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
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


class _Row:
    """One request's decoding state inside a batch."""

    def __init__(self, engine: Engine, request: Request):
        p = request.params
        self.request, self.params = request, p
        self.stream = TextStream(engine.tokenizer, p.stop)
        self.generator = make_generator(p.seed)
        self.context = list(request.prompt_ids)  # prompt + generated, for the repetition penalty
        self.gates: list[torch.Tensor] = []
        self.pieces: list[str] = []
        self.logprobs: list[TokenLogprob] | None = [] if p.logprobs is not None else None
        self.prompt_logprobs: list[TokenLogprob | None] | None = None
        self.finish: str | None = None
        self.position = len(request.prompt_ids)  # position id of the next input token
        self._prev = ""  # decoded text before the last token (for pieces)

    def completion(self, trace: bool) -> Completion:
        gates = (torch.stack(self.gates) if self.gates else torch.empty(0)) if trace else None
        return Completion(
            token_ids=self.stream.ids,
            text=self.stream.text,
            finish_reason=self.finish or "length",
            gates=gates,
            prompt_tokens=len(self.request.prompt_ids),
            pieces=self.pieces,
            logprobs=self.logprobs,
            prompt_logprobs=self.prompt_logprobs,
        )


class DecodeBatch:
    """Requests decoded together under one routing (mode, force, temperature); gear bias per row."""

    def __init__(self, engine: Engine, routing: Routing = SOFT, trace: bool = True):
        self.engine, self.routing, self.trace = engine, routing, trace
        self.rows: list[_Row] = []
        self.cache: BatchCache | None = None
        self.bias = torch.zeros(0, len(engine.pathways))  # (B, P)
        self.done: list[_Row] = []  # rows finished since the caller last collected them

    def __len__(self) -> int:
        return len(self.rows)

    def _routing(self, bias: torch.Tensor) -> Routing:
        if not bool(bias.abs().sum() > 0):
            return self.routing
        r = self.routing
        return Routing(r.mode, r.force, bias, r.temperature)

    def add(self, requests: list[Request]) -> list[_Row]:
        """Prefill these requests together and sample their first token; the unfinished ones join."""
        rows = [_Row(self.engine, r) for r in requests]
        work = [w for w in rows if w.params.max_new_tokens > 0 or w.params.prompt_logprobs is not None]
        for w in rows:
            if w not in work:
                w.finish = "length"
                self.done.append(w)
        if not work:
            return rows
        lens = [len(w.request.prompt_ids) for w in work]
        B, T0, P = len(work), max(lens), len(self.engine.pathways)
        ids = torch.full((B, T0), self.engine.pad_id, dtype=torch.long)
        valid = torch.zeros(B, T0, dtype=torch.bool)
        for b, w in enumerate(work):
            ids[b, T0 - lens[b] :] = torch.tensor(w.request.prompt_ids)
            valid[b, T0 - lens[b] :] = True
        pos = (valid.long().cumsum(1) - 1).clamp_min(0)
        bias = torch.tensor([w.request.gear_bias or [0.0] * P for w in work], dtype=torch.float32)
        cache = self.engine.model.new_cache(B, T0 + 16)
        cache.reserve(T0, valid)
        want_prompt = any(w.params.prompt_logprobs is not None for w in work)
        out = self.engine.model(
            ids,
            position_ids=pos,
            key_valid=cache.key_valid(T0),
            cache=cache,
            routing=self._routing(bias),
            last_only=not want_prompt,
            trace=self.trace,
        )
        if want_prompt:
            for b, w in enumerate(work):
                if w.params.prompt_logprobs is not None:
                    w.prompt_logprobs = _prompt_logprobs(
                        out.logits[b, T0 - lens[b] :], w.request.prompt_ids, w.params.prompt_logprobs
                    )
        logits = out.logits[:, -1].float()  # (B, V)
        gates = None if out.gates is None else out.gates[:, -1]  # (B, L, P)
        keep = []
        for b, w in enumerate(work):
            if w.params.max_new_tokens == 0:
                w.finish = "length"
                self.done.append(w)
            elif self._emit(w, logits[b], None if gates is None else gates[b]):
                keep.append(b)
            else:
                self.done.append(w)
        if keep:
            if len(keep) < B:
                cache.select(keep)
            joining = [work[b] for b in keep]
            if self.cache is None:
                self.cache = cache
            else:
                self.cache.merge(cache)
            self.rows += joining
            self.bias = torch.cat([self.bias, bias[keep]])
        return rows

    def step(self) -> None:
        """Decode one token for every row; rows that finish (or were cancelled) leave the batch."""
        for w in self.rows:
            if w.request.cancelled and w.finish is None:
                w.finish = "abort"
        self._drop_finished()
        if not self.rows:
            return
        B = len(self.rows)
        ids = torch.tensor([[w.context[-1]] for w in self.rows])
        pos = torch.tensor([[w.position] for w in self.rows])
        self.cache.reserve(1, torch.ones(B, 1, dtype=torch.bool))
        routing, decoder = self._routing(self.bias), self.engine.native
        with torch_threads(self.engine.decode_threads):
            if decoder is not None:  # the native step (native.py), else the model's forward
                out = decoder.step(ids, pos, self.cache, routing, self.trace)
            else:
                out = self.engine.model(
                    ids,
                    position_ids=pos,
                    key_valid=self.cache.key_valid(1),
                    cache=self.cache,
                    routing=routing,
                    last_only=True,
                    trace=self.trace,
                )
        logits = out.logits[:, -1].float()
        gates = None if out.gates is None else out.gates[:, -1]
        for b, w in enumerate(self.rows):
            w.position += 1
            self._emit(w, logits[b], None if gates is None else gates[b])
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [b for b, w in enumerate(self.rows) if w.finish is None]
        if len(keep) == len(self.rows):
            return
        self.done += [w for w in self.rows if w.finish is not None]
        self.rows = [self.rows[b] for b in keep]
        self.bias = self.bias[keep]
        if self.rows:
            self.cache.select(keep)
        else:
            self.cache = None

    def collect(self) -> list[_Row]:
        done, self.done = self.done, []
        return done

    def _emit(self, w: _Row, logits: torch.Tensor, gates: torch.Tensor | None) -> bool:
        """Sample w's next token from logits (V,); stream it; True while w goes on."""
        p, gs = w.params, w.request.gear_sampling
        if gs is not None and gates is not None:
            p = gs.params_for(p, gates.float().mean(0), self.engine.pathways)
        context = torch.tensor(w.context) if p.repetition_penalty != 1.0 else torch.empty(0, dtype=torch.long)
        constraint = w.request.constraint
        if constraint is not None:
            logits = logits.clone()
            constraint.mask(logits)
        tok = sample_token(logits, p, context, w.generator)
        if constraint is not None:
            constraint.accept(tok)
        lp = None
        if w.logprobs is not None:
            logprobs = torch.log_softmax(logits, -1)
            lp = TokenLogprob(tok, float(logprobs[tok]), top_logprobs(logprobs, p.logprobs))
            w.logprobs.append(lp)
        w.context.append(tok)
        if gates is not None:
            w.gates.append(gates)
        stream = w.stream
        if tok in self.engine.eos and not p.ignore_eos:
            w.finish = "stop"
            stream.ids.append(tok)  # counted as generated, not decoded into the text
            delta, piece = stream.finish(), ""
        else:
            delta = stream.add(tok)
            piece = _piece(w._prev, stream.full)
            w._prev = stream.full
            if stream.stopped or (constraint is not None and constraint.done):
                w.finish = "stop"
                if constraint is not None and constraint.done:
                    delta += stream.finish()
            elif len(stream.ids) >= p.max_new_tokens:
                w.finish, delta = "length", delta + stream.finish()
        w.pieces.append(piece)
        r = w.request
        if r.on_token is not None:
            r.on_token(tok, delta, gates)
        if r.on_event is not None:
            r.on_event(TokenEvent(tok, delta, piece, gates, lp, w.finish))
        return w.finish is None


def _piece(prev: str, cur: str) -> str:
    """The text one token added (an incomplete UTF-8 character shows once it is complete)."""
    prev = prev.rstrip("\ufffd")
    return cur[len(prev) :].rstrip("\ufffd") if cur.startswith(prev) else cur.rstrip("\ufffd")


def _prompt_logprobs(logits: torch.Tensor, ids: list[int], k: int) -> list[TokenLogprob | None]:
    """logits (T, V) over the prompt -> [None, logprob of token 1 given token 0, ...]."""
    logprobs = torch.log_softmax(logits[:-1].float(), -1)  # (T-1, V)
    target = torch.tensor(ids[1:])
    chosen = logprobs.gather(1, target[:, None])[:, 0].tolist()
    tops = torch.topk(logprobs, k, dim=-1) if k > 0 else None
    out: list[TokenLogprob | None] = [None]
    for j, tid in enumerate(ids[1:]):
        top = (
            [] if tops is None else list(zip(tops.indices[j].tolist(), tops.values[j].tolist(), strict=True))
        )
        out.append(TokenLogprob(tid, chosen[j], top))
    return out


def decode_layout(model: nn.Module, layout: str = "auto", streamed: bool = False, threads: int = 0) -> str:
    """Lay out the frozen weight matrices for decoding; returns the layout used.

    Decoding multiplies one row per sequence by every weight matrix, so it is bound by reading them. The
    native step (``streamed``) reads a matrix either with its own stream over the transposed layout, (in, out)
    contiguous, or with MKL over nn.Linear's (out, in), whichever this CPU reads faster for that shape:
    'auto' with the native step on CPU is 'planned', each shape's layout measured once per kind of CPU
    (stream_plan.py; ``threads`` = the decode threads it is timed with). Without the native step, on CPU,
    MKL reads fp32 matrices transposed at 20-28 GB/s here against 15-20 GB/s for (out, in) (short rows:
    SmolLM2's hidden size is 576), and bf16 faster the standard way: 'auto' = transposed for fp32 on CPU,
    standard otherwise. A layout keeps each weight's shape and values, only its strides change.
    """
    weight = next(model.parameters())
    frozen = [p for p in model.parameters() if not p.requires_grad and p.dim() >= 2]  # LoRA, routers train
    cpu = weight.device.type == "cpu"
    if layout == "auto" and cpu and streamed:
        chosen = stream_plan.plan([stream_plan.shape_of(p) for p in frozen], threads, native.cpu_id())
        for p in frozen:
            _relayout(p, chosen[stream_plan.shape_of(p)])
        return "planned"
    if layout == "auto":
        layout = "transposed" if cpu and weight.dtype == torch.float32 else "standard"
    if layout not in stream_plan.LAYOUTS:
        raise ValueError(f"layout {layout!r}: use auto, standard or transposed")
    for p in frozen:
        _relayout(p, layout)
    return layout


def _relayout(p: torch.Tensor, layout: str) -> None:
    if layout == "standard":
        p.data = p.data.contiguous()
    else:
        p.data = p.data.transpose(-1, -2).contiguous().transpose(-1, -2)


def decode_step_threads(threads: int | str = "auto") -> int:
    """Torch threads for decode steps (0 = torch's setting; prefill always keeps it). 'auto': one thread when
    OpenMP workers sleep between kernels (OMP_WAIT_POLICY=PASSIVE, the CLI's default): waking a sleeping
    worker costs more than the second core gives, both for the PyTorch forward's ~2,200 small kernels a step
    (1 to 32 rows, bench/bench_decode.py before the native step) and for the native step's weight stream
    split over two cores (no gain at 1 row, 149 vs 190 tok/s at 8)."""
    if threads == "auto":
        return 1 if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else 0
    if not isinstance(threads, int) or threads < 0:
        raise ValueError(f"decode threads {threads!r}: use 'auto', 0 (torch's setting) or a count >= 1")
    return threads


@contextmanager
def torch_threads(n: int):
    """Run the block with n torch threads (0: leave them), then restore."""
    before = torch.get_num_threads()
    if n == 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Engine:
    def __init__(
        self,
        model: PathwayLM,
        tokenizer,
        mode: str = "soft",
        layout: str = "auto",
        decode_threads: int | str = "auto",
        decode_kernel: str | None = None,
    ):
        self.model, self.tokenizer, self.default_mode = model.eval(), tokenizer, mode
        # auto | native | torch; None: $QWYTHOS_DECODE_KERNEL or auto (reaches chat, serve, eval, synth alike)
        kernel = decode_kernel or os.environ.get("QWYTHOS_DECODE_KERNEL") or "auto"
        streamed = native.available(model, kernel)
        self.decode_threads = decode_step_threads(decode_threads)
        self.layout = decode_layout(model, layout, streamed, self.decode_threads)
        self.native = native.NativeDecoder(model) if streamed else None  # None: the model's forward decodes
        self.eos = eos_ids(model, tokenizer)
        self.max_len = model.config.arch.max_position_embeddings
        self.vocab_size = model.config.arch.vocab_size
        self.pad_id = tokenizer.pad_token_id or 0

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

    def check(self, request: Request) -> None:
        """ValueError naming the problem if the request cannot run on this model."""
        ids, n = request.prompt_ids, request.params.max_new_tokens
        if not ids:
            raise ValueError("empty prompt: send at least one token")
        if len(ids) + n > self.max_len:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({n}) "
                f"exceeds the model's context of {self.max_len} tokens"
            )
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size}) for this model")
        if request.gear_sampling is not None:
            request.gear_sampling.check(self.pathways)
        if request.gear_bias is not None and len(request.gear_bias) != len(self.pathways):
            raise ValueError(f"gear_bias needs one value per pathway {self.pathways}")

    def generate(
        self, requests: list[Request], routing: Routing = SOFT, trace: bool = True, max_batch: int = 0
    ) -> list[Completion]:
        """Decode these requests to the end; completions in request order (see ``stream``)."""
        done: list[Completion | None] = [None] * len(requests)
        for i, c in self.stream(requests, routing, trace, max_batch):
            done[i] = c
        return done

    @torch.inference_mode()
    def stream(
        self, requests: list[Request], routing: Routing = SOFT, trace: bool = True, max_batch: int = 0
    ) -> Iterator[tuple[int, Completion]]:
        """(request index, completion) as each finishes. At most ``max_batch`` rows decode together
        (0 = all); as rows finish, waiting requests join the running batch (continuous batching), a group
        at a time once a quarter of the rows are free, so the batch stays full without a prefill per step."""
        for r in requests:
            self.check(r)
        cap = max_batch or len(requests)
        batch = DecodeBatch(self, routing, trace or any(r.gear_sampling for r in requests))  # gates needed
        index: dict[int, int] = {}  # id(row) -> request index
        nxt = 0
        while nxt < len(requests) or batch.rows:
            room, waiting = cap - len(batch), len(requests) - nxt
            if waiting and (not batch.rows or room >= min(waiting, max(1, cap // 4))):
                group = requests[nxt : nxt + room]
                for k, w in enumerate(batch.add(group)):
                    index[id(w)] = nxt + k
                nxt += len(group)
            else:
                batch.step()
            for w in batch.collect():
                yield index.pop(id(w)), w.completion(trace)


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


def routing_name(routing: Routing, pathways: list[str]) -> str:
    """The inverse of ``parse_routing``: 'soft', 'top1' or 'force=<pathway>'."""
    return f"force={pathways[routing.force]}" if routing.mode == "force" else routing.mode


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
