"""Shared fixtures: tiny random Llama/Mistral bases as real HF folders (config, safetensors, tokenizer)."""

from __future__ import annotations

import os

# before torch loads OpenMP: spinning worker threads collapse throughput on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have? 3 + 4 = 7. #### 7",
    "Once upon a time a dragon guarded a quiet village by the sea, and the children sang to it.",
    "The knight counted the coins: twelve gold, five silver. Then she rode into the storm.",
    "Solve step by step: 15 - 6 = 9, then 9 * 2 = 18. The answer is 18.",
]


def make_tokenizer(folder: Path, vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def make_tiny_base(folder: Path, model_type: str = "llama", seed: int = 0, **overrides) -> Path:
    """A random tiny HF base folder with real safetensors and a real BPE tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    kw = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    kw.update(overrides)
    torch.manual_seed(seed)
    if model_type == "mistral":
        kw.setdefault("sliding_window", None)
        model = MistralForCausalLM(MistralConfig(**kw))
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw))
    with torch.no_grad():  # norms are ones by default; random ones catch a missed weight
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return folder


def randomise(model, seed: int = 1, router_std: float = 0.5):
    """Non-zero, different LoRAs per pathway and a random router."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            paths = layer.mlp.pathways
            for t in (paths.lora_B_gate_up, paths.lora_B_down):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            r = layer.mlp.router.weight
            r.copy_(torch.randn(r.shape, generator=g) * router_std)
    return model


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests never write to the user's cache, except the converted embedded base (slow to rebuild)."""
    os.environ.setdefault("QWYTHOS_CACHE", str(Path.home() / ".cache" / "qwythos"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))
