"""The data card: card.md from the manifest, and PNG plots (lengths, pathway balance, difficulty, rejects)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_card(out: Path, manifest: dict, reduce, plots: bool = True) -> None:
    images = _plots(out / "plots", manifest, reduce) if plots else []
    lines = [
        f"# Curated dataset: {out.name}",
        "",
        f"Built by `qwythos curate` on {manifest['created']} (config hash `{manifest['config_hash'][:12]}`, "
        f"executor {manifest['executor']}). {manifest['selected']} records selected; tokens counted as "
        f"{manifest['token_counter']}.",
        "",
        "## Inputs",
        "",
        "| source | schema | file | sha256 |",
        "|---|---|---|---|",
        *[
            f"| {f['source']} | {f['schema']} | `{Path(f['path']).name}` | `{f['sha256'][:16]}` |"
            for f in manifest["inputs"]
        ],
        "",
        "Decontaminated against: "
        + (", ".join(f"`{Path(e['path']).name}`" for e in manifest["evals"]) or "no evaluation set")
        + f" ({manifest['config']['decontam']['n']}-gram overlap on prompts and responses).",
        "",
        "## Pathways",
        "",
        "| pathway | selected samples | selected tokens | pool samples | pool tokens |",
        "|---|---|---|---|---|",
    ]
    for p in sorted(set(manifest["pathways"]) | set(manifest["pool"])):
        s, q = manifest["pathways"].get(p, {}), manifest["pool"].get(p, {})
        cells = [s.get("samples", 0), s.get("tokens", 0), q.get("samples", 0), q.get("tokens", 0)]
        lines.append(f"| {p} | " + " | ".join(map(str, cells)) + " |")
    lines += ["", "## Steps and reject reasons", "", "| step | counts |", "|---|---|"]
    for step, what in manifest["steps"].items():
        lines.append(f"| {step} | {', '.join(f'{k}: {v}' for k, v in what.items())} |")
    lines += ["", "## Curriculum", "", f"Order: {manifest['curriculum']['order']}.", ""]
    lines += ["| stage | count | difficulty | pathways |", "|---|---|---|---|"]
    for s in manifest["curriculum"]["stages"]:
        d = s.get("difficulty")
        rng = f"{d[0]:.2f}-{d[1]:.2f}" if d else "-"
        lines.append(f"| {s['stage']} | {s['count']} | {rng} | {json.dumps(s.get('pathways', {}))} |")
    if images:
        lines += ["", "## Plots", ""] + [f"![{name}](plots/{name}.png)" for name in images]
    lines += [
        "",
        "## Files",
        "",
        "`data/` selected records in curriculum order; `pool/` good records over budget (active learning); "
        "`rejects/` every dropped record with step, reason and evidence; `manifest.json` everything above.",
        "",
    ]
    (out / "card.md").write_text("\n".join(lines))


def _plots(folder: Path, manifest: dict, reduce) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    sel = reduce.selected
    names = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=80)
        plt.close(fig)
        names.append(name)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p in sorted(set(reduce.pathway[sel].tolist())):
        rows = sel[reduce.pathway[sel] == p]
        ax.hist(np.log10(1 + reduce.tokens[rows]), bins=40, alpha=0.6, label=p)
    ax.set(xlabel="log10(1 + tokens)", ylabel="records", title="Length per pathway (selected)")
    ax.legend()
    save(fig, "lengths")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    paths = sorted(set(manifest["pathways"]) | set(manifest["pool"]))
    x = np.arange(len(paths))
    ax.bar(x - 0.2, [manifest["pathways"].get(p, {}).get("samples", 0) for p in paths], 0.4, label="selected")
    ax.bar(x + 0.2, [manifest["pool"].get(p, {}).get("samples", 0) for p in paths], 0.4, label="pool")
    ax.set_xticks(x, paths)
    ax.set(ylabel="samples", title="Pathway balance")
    ax.legend()
    save(fig, "pathways")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(reduce.diff[sel], bins=30)
    ax.set(xlabel="difficulty (percentile within pathway)", ylabel="records", title="Difficulty (selected)")
    save(fig, "difficulty")

    reasons = [
        (f"{step}:{reason}", n) for step, what in manifest["rejected"].items() for reason, n in what.items()
    ]
    if reasons:
        fig, ax = plt.subplots(figsize=(6, 0.8 + 0.3 * len(reasons)))
        ax.barh([r for r, _ in reasons], [n for _, n in reasons])
        ax.set(xlabel="records", title="Reject reasons")
        save(fig, "rejects")
    return names
