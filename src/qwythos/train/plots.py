"""PNG plots of a run's metrics.jsonl: losses per step, and gate accuracy / temperature."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics: Path, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    x = [r["global_step"] for r in rows]
    written = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in ("loss", "lm_loss", "gate_loss"):
        ys = [r.get(key) for r in rows]
        if any(y is not None for y in ys):
            ax.plot(
                [a for a, y in zip(x, ys, strict=True) if y is not None],
                [y for y in ys if y is not None],
                label=key,
            )
    _stage_marks(ax, rows)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    written.append(out / "loss.png")
    if any("gate_acc" in r for r in rows):
        fig, ax = plt.subplots(figsize=(8, 4))
        pts = [(r["global_step"], r["gate_acc"]) for r in rows if "gate_acc" in r]
        ax.plot(*zip(*pts, strict=True), label="gate accuracy vs labels")
        ax.plot(x, [r.get("gate_temperature", 1.0) for r in rows], label="gate temperature", linestyle="--")
        _stage_marks(ax, rows)
        ax.set_xlabel("optimiser step")
        ax.set_ylim(0, 1.05)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "gate.png", dpi=110)
        plt.close(fig)
        written.append(out / "gate.png")
    return written


def _stage_marks(ax, rows: list[dict]) -> None:
    last = None
    for r in rows:
        if r["stage"] != last:
            ax.axvline(r["global_step"], color="grey", alpha=0.3)
            ax.text(r["global_step"], ax.get_ylim()[1], r["stage"], fontsize=7, rotation=90, va="top")
            last = r["stage"]
