"""The CLI verbs end to end on a tiny base: init -> generate (--json) -> export -> generate on the export."""

from __future__ import annotations

import json

import pytest
import torch

from qwythos.cli import main


def test_init_generate_export_generate(tiny_base, tmp_path, capsys):
    model = tmp_path / "m"
    assert (
        main(
            ["init", "--base", str(tiny_base), "--out", str(model), "--rank", "4", "--router-init", "random"]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                str(model),
                "--prompt",
                "Once upon a time",
                "--max-new-tokens",
                "6",
                "--json",
                "--gear",
                "narrative=+2",
                "--mode",
                "soft",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "token_ids", "trace", "pathways", "switches"}
    assert len(out["trace"]) == len(out["token_ids"]) and out["pathways"] == ["reasoning", "narrative"]
    assert abs(sum(out["trace"][0]["gate"].values()) - 1) < 1e-3

    assert (
        main(["export", str(model), "--to", "mixtral", "--out", str(tmp_path / "mx"), "--mode", "top1"]) == 0
    )
    capsys.readouterr()
    assert (
        main(["generate", str(tmp_path / "mx"), "--prompt", "Tom has", "--max-new-tokens", "4", "--no-color"])
        == 0
    )
    text = capsys.readouterr().out
    assert "switches:" in text and "reasoning" in text


def test_bad_input_exits_2_with_a_clear_message(tiny_base, tmp_path, capsys):
    assert main(["init", "--base", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and "-v shows the traceback" in err
    assert main(["-v", "init", "--base", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err  # -v: where it was raised too (a bug raising ValueError is not hidden)
    assert "Traceback (most recent call last)" in err and "does not exist" in err
    assert main(["init", "--base", str(tiny_base), "--out", str(tmp_path / "m"), "--rank", "0"]) == 2
    assert "rank (0) must be > 0" in capsys.readouterr().err
    assert main(["init", "--base", str(tiny_base), "--out", str(tmp_path / "m"), "--pathways", "a,a"]) == 2
    assert "unique" in capsys.readouterr().err
    model = tmp_path / "ok"
    assert main(["init", "--base", str(tiny_base), "--out", str(model), "--rank", "2"]) == 0
    assert main(["generate", str(model), "--prompt", "x", "--gear", "poetry=1"]) == 2
    assert "unknown pathway 'poetry'" in capsys.readouterr().err
    assert main(["generate", str(model), "--prompt", "x", "--mode", "force=poetry"]) == 2
    assert "pathways are ['reasoning', 'narrative']" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bf16_weights_generate_the_fp32_greedy_start(tiny_base, tmp_path):
    from qwythos.inference.api import generate, load_engine
    from qwythos.inference.sampling import SamplingParams
    from qwythos.model.api import init_model

    model = init_model(out=tmp_path / "m", base=tiny_base)
    engine = load_engine(model, "bfloat16")
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    params = SamplingParams(max_new_tokens=3)
    fast, ref = (
        generate(engine, "Once upon a time", params=params),
        generate(model, "Once upon a time", params=params),
    )
    assert fast["token_ids"][0] == ref["token_ids"][0] and len(fast["token_ids"]) == 3
    assert all(abs(sum(t["gate"].values()) - 1) < 1e-2 for t in fast["trace"])
    with pytest.raises(ValueError, match="--dtype"):
        load_engine(model, "int8")


def test_chat_style_generation_defaults_to_gear_sampling_and_flags_override():
    import argparse

    from qwythos.cli import _generation_args, _sampling

    p = argparse.ArgumentParser()
    _generation_args(p)
    names = ["reasoning", "narrative"]
    params, gs = _sampling(p.parse_args([]), True, names)  # chat: sums greedy, stories sampled
    assert params.temperature == 0.0 and params.repetition_penalty == 1.1
    assert gs.per_pathway["reasoning"].temperature == 0.0 and gs.per_pathway["narrative"].temperature == 0.8
    assert _sampling(p.parse_args([]), False, names)[1] is None  # plain generate: greedy, as before
    params, gs = _sampling(p.parse_args(["--temperature", "0.7"]), True, names)
    assert gs is None and params.temperature == 0.7  # an explicit flag wins over the default
    assert _sampling(p.parse_args(["--gear-sampling", "off"]), True, names)[1] is None
    _, gs = _sampling(
        p.parse_args(["--gear-sampling", "narrative:t=1.2", "--gear-policy", "blend"]), False, names
    )
    assert gs.policy == "blend" and gs.per_pathway["narrative"].temperature == 1.2
    assert _sampling(p.parse_args([]), True, ["dense"])[1] is None  # one pathway: nothing to condition on
    params, _ = _sampling(p.parse_args(["--repetition-penalty", "1.0"]), True, names)
    assert params.repetition_penalty == 1.0


def test_generate_with_bad_gear_sampling_exits_2(tiny_base, tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["init", "--base", str(tiny_base), "--out", str(model), "--rank", "2"]) == 0
    args = ["generate", str(model), "--prompt", "x", "--max-new-tokens", "3", "--chat"]
    assert main([*args, "--gear-sampling", "poetry:t=1"]) == 2
    assert "unknown pathways ['poetry']" in capsys.readouterr().err
    assert main([*args, "--gear-sampling", "narrative:temp=1"]) == 2
    assert "pathway:t=T" in capsys.readouterr().err
    capsys.readouterr()
    assert main([*args, "--json"]) == 0 and json.loads(capsys.readouterr().out)["token_ids"]
