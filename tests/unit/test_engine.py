"""The generation engine: batched == unbatched, seeded sampling reproducible, stop strings exact, traces."""

from __future__ import annotations

import pytest
import torch

from conftest import randomise
from qwythos.inference.engine import Engine, Request, TextStream, parse_gear, parse_routing
from qwythos.inference.sampling import SamplingParams, filter_logits, parse_gear_sampling
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model


@pytest.fixture(scope="module")
def engine(tiny_base):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    return Engine(randomise(model), load_tokenizer(folder))


def prompts(engine):
    tok = engine.tokenizer
    return [
        tok.encode("Once upon a time a dragon"),
        tok.encode("Tom has 3"),
        tok.encode("The knight counted"),
    ]


@pytest.mark.parametrize("mode", ["soft", "top1"])
def test_batched_equals_unbatched(engine, mode):
    ps = prompts(engine)
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in (7, 4, 9)]
    routing = parse_routing(mode, engine.pathways)
    together = engine.generate([Request(p, q) for p, q in zip(ps, params, strict=True)], routing)
    for p, q, got in zip(ps, params, together, strict=True):
        alone = engine.generate([Request(p, q)], routing)[0]
        assert got.token_ids == alone.token_ids and len(got.token_ids) == q.max_new_tokens
        torch.testing.assert_close(got.gates, alone.gates, atol=1e-5, rtol=1e-5)


def test_per_request_gear_bias_in_one_batch(engine):
    p = prompts(engine)[0]
    q = SamplingParams(max_new_tokens=5, ignore_eos=True)
    a, b = engine.generate([Request(p, q, gear_bias=[3.0, 0.0]), Request(p, q, gear_bias=[0.0, 3.0])])
    assert a.summary()[:, 0].mean() > b.summary()[:, 0].mean() + 0.2  # each row got its own bias
    alone = engine.generate([Request(p, q, gear_bias=[0.0, 3.0])])[0]
    assert alone.token_ids == b.token_ids


def test_seeded_sampling_is_reproducible(engine):
    p = prompts(engine)[1]
    q = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=123, ignore_eos=True)
    first = engine.generate([Request(p, q)])[0].token_ids
    assert engine.generate([Request(p, q)])[0].token_ids == first
    other = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7, ignore_eos=True)
    assert engine.generate([Request(p, other)])[0].token_ids != first


def test_stop_strings_are_exact(engine):
    p = prompts(engine)[0]
    free = engine.generate([Request(p, SamplingParams(max_new_tokens=12, ignore_eos=True))])[0]
    assert len(free.text) > 6
    stop = free.text[3:6]
    pieces = []
    q = SamplingParams(max_new_tokens=12, stop=[stop], ignore_eos=True)
    done = engine.generate([Request(p, q, on_token=lambda t, d, g: pieces.append(d))])[0]
    assert done.finish_reason == "stop"
    assert done.text == free.text[: free.text.find(stop)]
    assert "".join(pieces) == done.text  # streamed deltas add up to the final text


def test_text_stream_holds_back_partial_stops_and_utf8(engine):
    tok = engine.tokenizer
    s = TextStream(tok, stop=["END"])
    out = "".join(s.add(t) for t in tok.encode("The knight E"))
    assert out == "The knight " and s.text.endswith("E")  # "E" may still grow into "END"
    ids = tok.encode("é")
    s2 = TextStream(tok, stop=[])
    assert "".join(s2.add(t) for t in ids) + s2.finish() == "é"


def test_max_new_tokens_zero_and_bad_requests(engine):
    p = prompts(engine)[0]
    done = engine.generate([Request(p, SamplingParams(max_new_tokens=0))])[0]
    assert done.token_ids == [] and done.finish_reason == "length"
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([Request([], SamplingParams())])
    with pytest.raises(ValueError, match="context"):
        engine.generate([Request(p, SamplingParams(max_new_tokens=10_000))])
    with pytest.raises(ValueError, match="unknown pathway 'poetry'"):
        engine.routing("force=poetry")
    with pytest.raises(ValueError, match="gear for unknown pathway"):
        engine.routing("soft", {"poetry": 1.0})
    with pytest.raises(ValueError, match="reasoning=\\+1.5"):
        parse_gear(["reasoning"])
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = filter_logits(logits, top_k=0, top_p=0.7)
    assert torch.isfinite(kept).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_k=1, top_p=1.0)).sum() == 1
    assert torch.isfinite(filter_logits(logits, top_k=0, top_p=5e-324)).tolist() == [
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize("temperature", [5e-324, 1e-30, 1e-6])
def test_a_vanishing_temperature_decodes_greedily(engine, temperature):
    """logits / 5e-324 is inf and its softmax NaN: such a temperature is greedy, not a crash (fuzzing)."""
    prompt = prompts(engine)[1]
    greedy = engine.generate([Request(prompt, SamplingParams(max_new_tokens=6))])[0].token_ids
    tiny = SamplingParams(max_new_tokens=6, temperature=temperature, seed=1)
    assert engine.generate([Request(prompt, tiny)])[0].token_ids == greedy


def uncached_greedy(model, prompt: list[int], n: int, routing) -> list[int]:
    """The reference: recompute the whole sequence for every token (no KV cache)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]), routing=routing).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("mode", ["soft", "top1", "force=narrative"])
def test_cached_equals_uncached(engine, mode):
    routing = parse_routing(mode, engine.pathways)
    for p in prompts(engine)[:2]:
        done = engine.generate([Request(p, SamplingParams(max_new_tokens=8, ignore_eos=True))], routing)[0]
        assert done.token_ids == uncached_greedy(engine.model, p, 8, routing)


def test_cached_equals_uncached_on_an_exported_mixtral(tmp_path, tiny_base):
    from qwythos.model.formats import export_mixtral, load_model

    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    randomise(model, seed=5)
    out = export_mixtral(model, tmp_path / "mx", tokenizer_src=folder, mode="soft")
    mx, tok, mode = load_model(out)
    eng = Engine(mx, tok, mode)
    p = tok.encode("Once upon a time")
    done = eng.generate([Request(p, SamplingParams(max_new_tokens=6, ignore_eos=True))])[0]
    assert done.token_ids == uncached_greedy(mx, p, 6, parse_routing(mode, eng.pathways))
    assert done.gates.shape == (6, 3, 2)


def test_rows_joining_a_running_batch_decode_as_if_alone(engine):
    """Continuous batching: a request that joins mid-way (longer prompt, other gear) changes nothing."""
    from qwythos.inference.engine import DecodeBatch

    a, b, c = prompts(engine)
    long_b = b + a  # longer than a's prompt + steps so far: the running cache is shifted right
    q = SamplingParams(max_new_tokens=8, ignore_eos=True)
    reqs = [Request(a, q), Request(long_b, q, gear_bias=[0.0, 2.0]), Request(c, q)]
    alone = [engine.generate([r])[0] for r in reqs]
    batch = DecodeBatch(engine)
    rows = batch.add([reqs[0]])
    batch.step()
    batch.step()
    rows += batch.add([reqs[1]])
    for _ in range(3):
        batch.step()
    rows += batch.add([reqs[2]])
    while batch.rows:
        batch.step()
    for row, ref in zip(rows, alone, strict=True):
        done = row.completion(True)
        assert done.token_ids == ref.token_ids
        torch.testing.assert_close(done.gates, ref.gates, atol=1e-5, rtol=1e-5)


def test_a_capped_batch_refills_as_rows_finish_and_decodes_as_if_alone(engine):
    """Engine.stream with max_batch: waiting requests join as rows finish; results as if each ran alone."""
    ps = prompts(engine) + [prompts(engine)[0][:3], prompts(engine)[2] + prompts(engine)[1]]
    budgets = (9, 2, 5, 7, 3)
    reqs = [
        Request(p, SamplingParams(max_new_tokens=n, ignore_eos=True))
        for p, n in zip(ps, budgets, strict=True)
    ]
    alone = [engine.generate([r])[0] for r in reqs]
    order = []
    for i, done in engine.stream(reqs, max_batch=2):
        order.append(i)
        assert done.token_ids == alone[i].token_ids
        torch.testing.assert_close(done.gates, alone[i].gates, atol=1e-5, rtol=1e-5)
    assert sorted(order) == list(range(5)) and order != list(range(5))  # as they finish, not in order
    assert [c.token_ids for c in engine.generate(reqs, max_batch=3)] == [c.token_ids for c in alone]


def test_the_decode_layout_changes_strides_not_results(engine):
    """fp32 on CPU: frozen matrices stored (in, out) contiguous; values, shapes and tokens unchanged."""
    from qwythos.inference.engine import decode_layout

    model = engine.model
    frozen = [p for p in model.parameters() if not p.requires_grad and p.dim() >= 2]
    before = [p.detach().clone() for p in frozen]
    reqs = [Request(p, SamplingParams(max_new_tokens=6, ignore_eos=True)) for p in prompts(engine)]
    assert engine.layout == "planned"  # 'auto' on CPU with the native step: per-shape, measured
    ref = engine.generate(reqs)
    try:
        assert decode_layout(model, "standard") == "standard"
        assert all(p.is_contiguous() for p in frozen)
        standard = engine.generate(reqs)
    finally:
        decode_layout(model, "transposed")
    assert all(p.transpose(-1, -2).is_contiguous() and not p.is_contiguous() for p in frozen)
    assert all(torch.equal(p, b) for p, b in zip(frozen, before, strict=True))
    assert all(p.is_contiguous() for p in model.parameters() if p.requires_grad)  # LoRA, routers untouched
    for a, b in zip(ref, standard, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(a.gates, b.gates, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="layout 'rows'"):
        decode_layout(model, "rows")


def test_decode_steps_run_on_one_thread_when_openmp_workers_sleep(engine, monkeypatch):
    from qwythos.inference.engine import decode_step_threads, torch_threads

    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert decode_step_threads("auto") == 1
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert decode_step_threads("auto") == 0 and decode_step_threads(3) == 3
    with pytest.raises(ValueError, match="decode threads -1"):
        decode_step_threads(-1)
    before = torch.get_num_threads()
    seen = []
    with torch_threads(1):
        seen.append(torch.get_num_threads())
    assert seen == [1] and torch.get_num_threads() == before
    reqs = [Request(p, SamplingParams(max_new_tokens=5, ignore_eos=True)) for p in prompts(engine)[:2]]
    ref, orig = engine.generate(reqs), engine.decode_threads
    engine.decode_threads = 1 if orig == 0 else 0
    try:  # the same tokens with the other setting; the caller's thread count is back afterwards
        assert [c.token_ids for c in engine.generate(reqs)] == [c.token_ids for c in ref]
        assert torch.get_num_threads() == before
    finally:
        engine.decode_threads = orig


def test_logprobs_match_a_full_forward(engine):
    p = prompts(engine)[1]
    q = SamplingParams(max_new_tokens=4, ignore_eos=True, logprobs=3, prompt_logprobs=2)
    done = engine.generate([Request(p, q)])[0]
    full = torch.tensor([p + done.token_ids])
    with torch.no_grad():
        ref = torch.log_softmax(engine.model(full).logits[0].float(), -1)  # (T, V)
    assert done.prompt_logprobs[0] is None and len(done.prompt_logprobs) == len(p)
    for j in range(1, len(p)):
        lp = done.prompt_logprobs[j]
        assert lp.token_id == p[j] and abs(lp.logprob - float(ref[j - 1, p[j]])) < 1e-4
        assert [t for t, _ in lp.top] == ref[j - 1].topk(2).indices.tolist()
    for i, lp in enumerate(done.logprobs):
        row = ref[len(p) - 1 + i]
        assert abs(lp.logprob - float(row[done.token_ids[i]])) < 1e-4
        assert lp.top[0][0] == done.token_ids[i]  # greedy: the chosen token is the most likely one
        assert len(lp.top) == 3
    scored = engine.generate([Request(p, SamplingParams(max_new_tokens=0, prompt_logprobs=0))])[0]
    assert scored.token_ids == [] and [x.logprob for x in scored.prompt_logprobs[1:]] == pytest.approx(
        [x.logprob for x in done.prompt_logprobs[1:]], abs=1e-5
    )


def test_pieces_and_events_follow_the_tokens(engine):
    p = prompts(engine)[0]
    events = []
    q = SamplingParams(max_new_tokens=6, ignore_eos=True)
    done = engine.generate([Request(p, q, on_event=events.append)])[0]
    assert [e.token_id for e in events] == done.token_ids
    assert "".join(done.pieces) == done.text == "".join(e.delta for e in events)
    assert events[-1].finish_reason == "length" and all(e.finish_reason is None for e in events[:-1])


def test_scheduler_batches_concurrent_requests_and_cancels(engine):
    from qwythos.inference.scheduler import Job, QueueFull, Scheduler

    ps = prompts(engine)
    q = SamplingParams(max_new_tokens=6, ignore_eos=True)
    soft, top1 = parse_routing("soft", engine.pathways), parse_routing("top1", engine.pathways)
    alone = [engine.generate([Request(p, q)], r)[0] for p, r in zip(ps, (soft, top1, soft), strict=True)]
    sched = Scheduler(engine, max_batch=4, max_queue=8)
    jobs = sched.submit([Job(Request(p, q), r) for p, r in zip(ps, (soft, top1, soft), strict=True)])
    slow = Job(Request(ps[0], SamplingParams(max_new_tokens=400, ignore_eos=True)), soft)
    sched.submit([slow])
    sched.start()
    for j, ref in zip(jobs, alone, strict=True):
        assert j.wait(30).token_ids == ref.token_ids and j.first_token is not None
    slow.cancel()
    assert slow.wait(30).finish_reason == "abort" and len(slow.completion.token_ids) < 400
    with pytest.raises(QueueFull):
        sched.submit([Job(Request(ps[0], q), soft) for _ in range(9)])
    late = sched.submit([Job(Request(ps[1], q), soft)])[0]
    sched.stop(drain=True, timeout=30)  # graceful: the queued request still finishes
    assert late.done.is_set() and len(late.completion.token_ids) == 6
    with pytest.raises(RuntimeError, match="shutting down"):
        sched.submit([Job(Request(ps[1], q), soft)])


def test_gear_sampling_with_one_pathway_forced_is_ordinary_sampling(engine):
    """Forced onto a pathway, the gate is one-hot: its settings apply to every token, exactly as if the
    request had asked for them; the other pathway's settings never matter."""
    p = prompts(engine)[0]
    gs = parse_gear_sampling("reasoning:t=0;narrative:t=1.0,top_p=0.9")
    q = SamplingParams(max_new_tokens=10, seed=5, ignore_eos=True)
    for forced, plain in (
        ("reasoning", q),
        ("narrative", SamplingParams(10, 1.0, 0.9, seed=5, ignore_eos=True)),
    ):
        routing = parse_routing(f"force={forced}", engine.pathways)
        got = engine.generate([Request(p, q, gear_sampling=gs)], routing, trace=False)[0]
        assert got.gates is None  # the gates were used to sample, not returned
        assert got.token_ids == engine.generate([Request(p, plain)], routing)[0].token_ids, forced


@pytest.mark.parametrize("policy", ["argmax", "blend"])
def test_gear_sampling_is_seeded_and_follows_the_gate(engine, policy):
    p = prompts(engine)[1]
    gs = parse_gear_sampling("reasoning:t=0;narrative:t=1.5", policy)
    q = SamplingParams(max_new_tokens=12, seed=11, ignore_eos=True)
    a = engine.generate([Request(p, q, gear_sampling=gs)])[0]
    assert engine.generate([Request(p, q, gear_sampling=gs)])[0].token_ids == a.token_ids
    routing = parse_routing("force=reasoning", engine.pathways)  # a one-hot gate: reasoning's greedy decoding
    greedy = engine.generate([Request(p, q, gear_sampling=gs)], routing)[0]
    assert greedy.token_ids == engine.generate([Request(p, q)], routing)[0].token_ids
    assert greedy.token_ids != a.token_ids  # the soft gate sampled some tokens at narrative's temperature


def test_gear_sampling_settings_are_checked():
    w = torch.tensor([0.25, 0.75])
    gs = parse_gear_sampling("reasoning:t=0;narrative:t=0.8,top_p=0.9,top_k=40", "blend")
    got = gs.params_for(SamplingParams(temperature=0.3), w, ["reasoning", "narrative"])
    assert got.temperature == pytest.approx(0.6) and got.top_p == pytest.approx(0.925) and got.top_k == 40
    got = parse_gear_sampling("narrative:t=0.8").params_for(
        SamplingParams(0, 0.3), w, ["reasoning", "narrative"]
    )
    assert got.temperature == 0.8 and got.top_p == 1.0  # argmax: narrative's settings
    with pytest.raises(ValueError, match="narrative:t=0.8,top_p=0.95"):
        parse_gear_sampling("narrative:temp=0.8")
    with pytest.raises(ValueError, match="temperature"):
        parse_gear_sampling("narrative:t=-1")
    with pytest.raises(ValueError, match="policy 'mean'"):
        parse_gear_sampling("narrative:t=1", "mean")
    with pytest.raises(ValueError, match=r"unknown pathways \['poetry'\]"):
        parse_gear_sampling("poetry:t=1").check(["reasoning", "narrative"])
