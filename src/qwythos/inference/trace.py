"""Rendering gate traces: tokens coloured by pathway for terminals, and a JSON-able per-token record."""

from __future__ import annotations

import torch

RESET = "\x1b[0m"
PALETTE = ("\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[31m")  # cyan, magenta, ...


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds: prefix differences of the decoded text, with an incomplete UTF-8 sequence
    (a byte-level token that splits a character decodes to U+FFFD) held back and given to the token that
    completes it, so no piece shows a replacement character and the pieces join to the whole decode."""
    out, shown = [], ""
    for i in range(len(ids)):
        cur = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        if i < len(ids) - 1:
            cur = cur.rstrip("\ufffd")
        out.append(cur[len(shown) :] if cur.startswith(shown) else cur)  # else: the decoder rewrote the text
        shown = cur
    return out


def summarise(gates: torch.Tensor) -> torch.Tensor:
    """(n, L, P) per-layer gates -> (n, P) per-token gate (mean over layers)."""
    return gates.float().mean(1)


def switches(dominant: list[int]) -> int:
    return sum(1 for a, b in zip(dominant, dominant[1:], strict=False) if a != b)


def trace_records(tokenizer, ids: list[int], gates: torch.Tensor, pathways: list[str]) -> list[dict]:
    """[{token_id, text, gate: {pathway: weight}, pathway}] for each generated token."""
    texts = token_texts(tokenizer, ids)
    per_token = summarise(gates) if gates.numel() else torch.zeros(0, len(pathways))
    records = []
    for i, tid in enumerate(ids):
        g = per_token[i] if i < len(per_token) else None
        records.append(
            {
                "token_id": tid,
                "text": texts[i],
                "gate": None
                if g is None
                else {p: round(float(w), 4) for p, w in zip(pathways, g, strict=True)},
                "pathway": None if g is None else pathways[int(g.argmax())],
            }
        )
    return records


def render(records: list[dict], pathways: list[str], color: bool = True) -> str:
    """Coloured text (or [pathway] markers without colour), a legend and the switch count."""
    dominant = [pathways.index(r["pathway"]) for r in records if r["pathway"] is not None]
    parts = []
    last = None
    for r in records:
        if r["pathway"] is None:
            parts.append(r["text"])
            continue
        p = pathways.index(r["pathway"])
        if color:
            parts.append(PALETTE[p % len(PALETTE)] + r["text"] + RESET)
        else:
            parts.append((f"[{r['pathway']}]" if p != last else "") + r["text"])
        last = p
    usage = {p: 0.0 for p in pathways}
    for r in records:
        for p, w in (r["gate"] or {}).items():
            usage[p] += w / max(len(records), 1)
    legend = "  ".join(
        (PALETTE[i % len(PALETTE)] + f"■ {p}" + RESET if color else f"{p}") + f" {usage[p]:.0%}"
        for i, p in enumerate(pathways)
    )
    return "".join(parts) + f"\n\n{legend}   switches: {switches(dominant)}"
