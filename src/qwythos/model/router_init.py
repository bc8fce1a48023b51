"""Router initialisation from prompts (mergekit's "hidden" recipe, generalised to P pathways).

Per layer, the router row of pathway p is the L2-normalised difference between the mean router input
(post-attention-norm hidden state) over p's prompts and the mean over all pathways' prompts. With two
pathways that is ±(mean_reasoning − mean_narrative)/‖·‖: a per-layer logistic "gear".
"""

from __future__ import annotations

import torch

from .transformer import PathwayLM


@torch.no_grad()
def mean_router_inputs(model: PathwayLM, batches: list[torch.Tensor]) -> torch.Tensor:
    """Mean router input per layer over all tokens of the given (1, T) id tensors: (L, H)."""
    sums = [torch.zeros(model.config.arch.hidden_size, dtype=torch.float64) for _ in model.layers]
    count = 0

    def hook(i):
        def fn(_module, args):
            sums[i] += args[0].reshape(-1, args[0].shape[-1]).double().sum(0)

        return fn

    handles = [layer.mlp.router.register_forward_pre_hook(hook(i)) for i, layer in enumerate(model.layers)]
    was_training = model.training
    model.eval()  # no LoRA dropout while measuring
    try:
        for ids in batches:
            model(ids, last_only=True)
            count += ids.numel()
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return torch.stack(sums) / max(count, 1)


@torch.no_grad()
def init_router_from_prompts(
    model: PathwayLM, tokenizer, prompts: dict[str, list[str]], scale: float = 1.0
) -> None:
    """Set every router from example prompts per pathway ({name: [prompt, ...]}); every pathway needs some."""
    names = model.pathway_names
    missing = [n for n in names if not prompts.get(n)]
    if missing:
        raise ValueError(f"router init from prompts needs prompts for every pathway; none for {missing}")
    means = {}
    for name in names:
        batches = [torch.tensor([tokenizer.encode(p)]) for p in prompts[name]]
        means[name] = mean_router_inputs(model, batches)  # (L, H)
    overall = torch.stack(list(means.values())).mean(0)
    for p, name in enumerate(names):
        d = means[name] - overall  # (L, H)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        for layer, row in zip(model.layers, d, strict=True):
            layer.mlp.router.weight[p] = (scale * row).to(layer.mlp.router.weight.dtype)
    model.config.pathways.router_init = "prompts"
