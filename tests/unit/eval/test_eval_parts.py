"""The evaluation's parts pinned on hand-made inputs and against references: scoring, the gear, batching,
teacher-forced perplexity (vs transformers), gate accuracy, the consistency script, the judge, errors."""

from __future__ import annotations

import json
import math

import httpx
import pytest
import torch

from qwythos.chat import render
from qwythos.config import ConfigError
from qwythos.eval import consistency as cons
from qwythos.eval import data as evdata
from qwythos.eval import judge as judge_mod
from qwythos.eval import tasks
from qwythos.eval.api import load_eval_config
from qwythos.eval.baselines import System, build_systems, resolve_target
from qwythos.eval.config import JudgeSection
from qwythos.eval.generation import Job, Output, batches, fit_context, generate
from qwythos.eval.teacher import score
from qwythos.inference.engine import Completion, Engine
from qwythos.inference.sampling import SamplingParams
from qwythos.model.block import Routing
from qwythos.model.formats import load_native
from qwythos.records import Record
from qwythos.train.config import DataSection


def out(text: str, answer: str = "", gates: torch.Tensor | None = None, task: str = "gsm") -> Output:
    n = 0 if gates is None else gates.shape[0]
    c = Completion(list(range(n)), text, "stop", gates, 3)
    return Output(Job(task, "k", [1, 2, 3], SamplingParams(), {"answer": answer}), c)


def test_gsm_scoring_on_hand_made_answers():
    outs = [
        out("3 + 4 = 7\n#### 7", "7"),  # strict and flexible
        out("so the answer is 7", "7"),  # flexible only
        out("#### 8", "#### 7"),  # wrong
        out("nothing", "7"),  # no number
    ]
    m = tasks.score_gsm(outs)
    assert (m["gsm_strict"], m["gsm_flexible"], m["gsm_format"], m["gsm_n"]) == (0.25, 0.5, 0.5, 4)
    assert tasks.score_gsm([])["gsm_strict"] is None


def test_gear_counts_switches_and_usage_exactly():
    R, N = [0.9, 0.1], [0.2, 0.8]
    # 2 layers; the token's pathway is the argmax of the layer mean: R R N R  -> 2 switches in 4 tokens
    g = torch.tensor([[R, R], [R, R], [N, N], [R, N]])  # (4, L=2, P=2); last token mean (0.55, 0.45) -> R
    other = torch.tensor([[N, N], [N, N]])  # 0 switches in 2 tokens
    gear = tasks.gear({"reasoning": [out("", gates=g)], "narrative": [out("", gates=other)]}, ["r", "n"])
    assert gear["switches_per_100_by_domain"] == {"reasoning": 50.0, "narrative": 0.0}
    assert gear["switches_per_100"] == pytest.approx(100 * 2 / 6)
    assert gear["usage_by_domain"]["narrative"] == {"r": 0.2, "n": 0.8}
    assert gear["usage_by_domain"]["reasoning"]["r"] == pytest.approx((0.9 * 5 + 0.2 * 3) / 8)
    assert gear["per_layer_usage"]["reasoning"][0] == pytest.approx(
        [(0.9 * 3 + 0.2) / 4, (0.1 * 3 + 0.8) / 4]
    )


def test_narrative_scores_follow_the_shared_metrics():
    same = [out("the cat sat on the mat", task="narrative")] * 3
    varied = [out(t, task="narrative") for t in ("the cat sat on the mat", "a dragon slept", "rain fell")]
    a, b = tasks.score_narrative(same), tasks.score_narrative(varied)
    assert a["distinct_2"] == pytest.approx(1 / 3) and b["distinct_2"] == 1.0
    assert a["self_bleu"] > 0.9 > b["self_bleu"]
    assert a["len_words_mean"] == 6 and a["finished_share"] == 1.0


def test_batches_respect_both_limits_and_sort_by_length():
    jobs = [Job("t", str(i), [0] * n, SamplingParams()) for i, n in enumerate([5, 50, 6, 7, 49, 8])]
    groups = batches(jobs, batch_size=3, max_batch_tokens=100)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        assert len(g) <= 3 and len(g) * max(len(jobs[i].prompt_ids) for i in g) <= 100
    assert groups[0] == [0, 2, 3]  # the short ones together


def test_fit_context_keeps_the_tail():
    assert fit_context([1, 2, 3], 2, 10) == ([1, 2, 3], None)
    assert fit_context(list(range(20)), 4, 10) == (list(range(14, 20)), 20)
    with pytest.raises(ValueError, match="max_new_tokens"):
        fit_context([1], 10, 10)


def test_stories_per_prompt_are_seeded_per_sample(tiny_run):
    """narrative.samples_per_prompt: distinct seeds per sample; sample k of prompt i does not depend on how
    many prompts or samples there are; leakage is scored on every sample."""
    model = load_native(tiny_run / "model")
    from transformers import AutoTokenizer

    engine = Engine(model, AutoTokenizer.from_pretrained(tiny_run / "model"))
    prompts = ["Tell a story about a fox.", "Tell a story about a ship."]
    three = tasks.narrative_jobs(engine, prompts, 8, 0.8, 0.95, seed=0, samples=3)
    one = tasks.narrative_jobs(engine, prompts[:1], 8, 0.8, 0.95, seed=0)
    assert [j.key for j in three] == [
        "story-0",
        "story-0-1",
        "story-0-2",
        "story-1",
        "story-1-1",
        "story-1-2",
    ]
    assert len({j.params.seed for j in three}) == 6 and three[0].params.seed == one[0].params.seed
    texts = [o.text for o in generate(engine, Routing("soft"), three, batch_size=6)]
    alone = generate(engine, Routing("soft"), [three[4]], batch_size=1)
    assert alone[0].text == texts[4] and len(set(texts[:3])) > 1  # same seed same story; samples differ
    scored = tasks.score_narrative([out(t, task="narrative") for t in ["3 + 4 = 7", "a fox", "#### 2", "x"]])
    assert scored["story_leakage"] == 0.5 and scored["narrative_n"] == 4


def test_batched_generation_equals_one_by_one_and_keeps_job_order(tiny_run):
    model = load_native(tiny_run / "model")
    from transformers import AutoTokenizer

    engine = Engine(model, AutoTokenizer.from_pretrained(tiny_run / "model"))
    prompts = ["Tom has 3 apples.", "Once upon a time a dragon", "12 + 5 =", "The knight counted the coins"]
    jobs = [
        Job(
            "t",
            str(i),
            engine.encode_chat([{"role": "user", "content": p}]),
            SamplingParams(max_new_tokens=6),
        )
        for i, p in enumerate(prompts)
    ]
    long = [5 + i % 300 for i in range(895)]  # longer than the 512-token context
    jobs.append(Job("t", "long", long, SamplingParams(max_new_tokens=6)))
    together = generate(engine, Routing("soft"), jobs, batch_size=8, max_batch_tokens=10_000)
    alone = generate(engine, Routing("soft"), jobs, batch_size=1)
    assert [o.job.key for o in together] == [j.key for j in jobs]
    for a, b in zip(together, alone, strict=True):
        assert a.completion.token_ids == b.completion.token_ids and a.error is None
        assert torch.allclose(a.gates, b.gates, atol=1e-4)
    assert together[-1].truncated_from == 895 and all(o.truncated_from is None for o in together[:-1])


def test_a_failing_request_is_recorded_not_raised(tiny_run):
    model = load_native(tiny_run / "model")
    from transformers import AutoTokenizer

    engine = Engine(model, AutoTokenizer.from_pretrained(tiny_run / "model"))
    good = Job("t", "ok", [5, 6, 7], SamplingParams(max_new_tokens=3))
    bad = Job("t", "bad", [5, 10**6, 7], SamplingParams(max_new_tokens=3))  # token id outside the vocab
    outs = generate(engine, Routing("soft"), [good, bad], batch_size=4)
    assert outs[0].error is None and len(outs[0].completion.token_ids) == 3
    assert outs[1].completion is None and "must be in [0," in outs[1].error


def test_base_system_perplexity_equals_the_plain_transformers_base(tiny_run, tiny_base):
    """The 'base' system (LoRA B zeroed, forced) scores held-out text exactly as the untouched HF base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_target(tiny_run)
    systems, _ = build_systems(target, ["base", "hybrid_soft"])
    base, soft = systems
    rec = Record(
        "x",
        "t",
        [
            {"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "content": "The children sang to the dragon by the sea."},
        ],
        pathway="narrative",
    )
    with base.active():
        got = score(base.engine.model, base.engine.tokenizer, {"narrative": [rec]}, base.routing, gates=False)
    tok = AutoTokenizer.from_pretrained(tiny_run / "model")
    ex = render(rec, tok, ["reasoning", "narrative"], DataSection(max_seq_len=128))
    hf = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([ex.input_ids])).logits[0, :-1]
    labels = torch.tensor(ex.labels[1:])
    keep = labels != -100
    ref = math.exp(float(torch.nn.functional.cross_entropy(logits[keep], labels[keep])))
    assert got["narrative"]["ppl"] == pytest.approx(ref, rel=1e-4)
    assert got["narrative"]["tokens"] == int(keep.sum())
    # the LoRAs are restored after the base ran: the hybrid differs from the base again
    hybrid = score(soft.engine.model, soft.engine.tokenizer, {"narrative": [rec]}, soft.routing, gates=False)
    assert hybrid["narrative"]["ppl"] != pytest.approx(ref, rel=1e-4)


def test_gate_accuracy_against_labels_and_spans(tiny_run):
    model = load_native(tiny_run / "model")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_run / "model")
    story = "The knight counted the coins: 12 + 5 = 17. Then she rode into the storm."
    s0, s1 = story.index("12"), story.index(" Then")
    records = {
        "gsm": [
            Record(
                "r", "t", [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "#### 4"}]
            )
        ],
        "narrative": [
            Record("n", "t", [{"role": "user", "content": "Story"}, {"role": "assistant", "content": story}])
        ],
        "mixed": [
            Record(
                "m",
                "t",
                [{"role": "user", "content": "Story with a sum"}, {"role": "assistant", "content": story}],
                pathway="mixed",
                spans=[{"message": 1, "start": s0, "end": s1, "pathway": "reasoning"}],
            )
        ],
    }
    records["gsm"][0].pathway, records["narrative"][0].pathway = "reasoning", "narrative"
    to_reasoning = Routing("soft", gear_bias=torch.tensor([30.0, -30.0]))  # the gate always says reasoning
    r = score(model, tok, records, to_reasoning, gates=True)
    assert r["gsm"]["gate_acc"] == 1.0 and r["narrative"]["gate_acc"] == 0.0
    assert r["mixed"]["gate_acc_spans"] == 1.0 and 0 < r["mixed"]["gate_acc"] < 1
    assert r["gsm"]["usage"]["reasoning"] == pytest.approx(1.0)
    to_narrative = Routing("soft", gear_bias=torch.tensor([-30.0, 30.0]))
    n = score(model, tok, records, to_narrative, gates=True)
    assert (
        n["gsm"]["gate_acc"] == 0.0
        and n["narrative"]["gate_acc"] == 1.0
        and n["mixed"]["gate_acc_spans"] == 0.0
    )
    assert r["mixed"]["gate_acc"] + n["mixed"]["gate_acc"] == pytest.approx(1.0)


def test_consistency_script_is_long_and_its_probes_are_checkable():
    script = cons.build_script()
    assert script.words >= 10_000 and script.messages[0]["role"] == "user"
    kinds = {p.kind for p in script.probes}
    assert kinds == {"persona", "world"} and [p.kind for p in script.probes[:2]] == ["persona", "world"]
    key = next(p for p in script.probes if p.item == "key" and p.position == len(script.messages))
    assert key.expected == ("pocket",) and set(key.stale) == {"drawer", "hook"}
    assert cons.correct_answer("It is in my coat pocket.", key)
    assert not cons.correct_answer("In the drawer, or maybe the pocket.", key)  # a stale value too
    candles = next(p for p in script.probes if p.item == "candles" and p.position == len(script.messages))
    assert cons.correct_answer("Four candles.", candles) and not cons.correct_answer("five", candles)

    def encode(messages):
        return [0] * sum(len(m["content"].split()) for m in messages)

    messages, start = cons.window(script, key, encode, budget=400)
    assert messages[0]["role"] == "system" and messages[-1]["content"] == key.question
    assert len(encode(messages)) <= 400 and start % 2 == 0 and start > 0
    assert len(encode([messages[0], *script.messages[start - 2 : key.position], messages[-1]])) > 400


def test_judge_scores_through_an_openai_compatible_endpoint(monkeypatch):
    assert judge_mod.parse_scores(
        'ok {"coherence": 4, "creativity": 2, "fluency": 5, "instruction_following": 3}'
    )
    assert (
        judge_mod.parse_scores('{"coherence": 9, "creativity": 2, "fluency": 5, "instruction_following": 3}')
        is None
    )
    assert judge_mod.parse_scores("no json") is None
    seen = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((str(request.url), request.headers.get("authorization"), body["model"]))
        story = body["messages"][1]["content"]
        content = (
            "garbage"
            if "bad" in story
            else '{"coherence": 4, "creativity": 2, "fluency": 5, "instruction_following": 3}'
        )
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(reply), **kw))
    monkeypatch.setenv("QWYTHOS_JUDGE_API_KEY", "k")
    cfg = JudgeSection(base_url="http://judge.local/v1/", model="j", concurrency=2)
    m = judge_mod.judge([("p", "a good story"), ("p", "a bad story"), ("p", "another good one")], cfg)
    assert m["judge_coherence"] == 4 and m["judge_creativity"] == 2 and m["judge_n"] == 2
    assert m["judge_errors"] == 1
    assert seen[0] == ("http://judge.local/v1/chat/completions", "Bearer k", "j")


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"unknown key.*colour"):
        load_eval_config(overrides=["gsm.colour=3"])
    with pytest.raises(ConfigError, match="unknown system"):
        load_eval_config(overrides=["systems=[hybrid,base]"])
    with pytest.raises(ConfigError, match="judge.model"):
        load_eval_config(overrides=["judge.base_url=http://x/v1"])
    with pytest.raises(ValueError, match="--limit"):
        load_eval_config(limit=0)
    assert load_eval_config(limit=3).size(10) == 3 and load_eval_config().size(10) == 10


def test_target_errors_say_what_to_pass(tmp_path, tiny_run):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_target(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a training run"):
        resolve_target(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("data: {}\n")
    with pytest.raises(ValueError, match="--resume"):
        resolve_target(tmp_path / "half")
    t = resolve_target(tiny_run)
    assert t.kind == "run" and t.dense_dir is not None
    assert resolve_target(tiny_run / "model").kind == "model"
    assert isinstance(build_systems(resolve_target(tiny_run / "model"), ["dense_lora", "base"])[0][0], System)


def test_gsm_file_rows_and_fewshot_turns(tmp_path):
    f = tmp_path / "gsm.jsonl"
    rows = [{"question": "2+2?", "answer": "2 + 2 = 4\n#### 4"}, {"question": "3+3?", "answer": "6"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = evdata.read_gsm_file(f)
    assert [p.answer for p in problems] == [r["answer"] for r in rows]
    assert problems[0].solution and not problems[1].solution  # only a worked solution is scored by ppl
    msgs = tasks.gsm_messages(problems[1], shots=[problems[0]])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[1]["content"].endswith(
        "#### 4"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    with pytest.raises(ValueError, match="row 1 needs 'question' and 'answer'"):
        evdata.read_gsm_file(bad)
    with pytest.raises(FileNotFoundError, match="gsm.file"):
        evdata.read_gsm_file(tmp_path / "none.jsonl")
    problems, shots, info = evdata.heldout_gsm(3, 7, trained=[], fewshot=2)
    assert len(problems) == 3 and len(shots) == 2 and info["fewshot"] == 2
    assert not {p.question for p in problems} & {s.question for s in shots}  # a shot is never a test item
