"""The report: PNG plots, report.md and a self-contained report.html (plots inline as base64, no network),
and the side-by-side comparison of several evaluations (``qwythos eval --compare``).

Everything here reads the results dict (results.json) only, so a report can be rebuilt from it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from . import stats

TABLES = (
    (
        "Reasoning",
        (
            "gsm_strict",
            "gsm_flexible",
            "gsm_format",
            "gsm_file_strict",
            "gsm_file_flexible",
            "gsm_ppl",
            "mixed_strict",
            "mixed_flexible",
        ),
    ),
    (
        "Narrative",
        (
            "distinct_1",
            "distinct_2",
            "distinct_3",
            "self_bleu",
            "repetition",
            "story_leakage",
            "narrative_ppl",
            "len_words_mean",
            "len_words_p90",
            "finished_share",
        ),
    ),
    (
        "Gear switching",
        (
            "switches_per_100",
            "gate_acc_domain",
            "gate_acc_reasoning",
            "gate_acc_narrative",
            "gate_acc_spans",
            "mixed_ppl",
        ),
    ),
    (
        "Consistency (plain chat; engine: the dialogue engine on the same history)",
        (
            "consistency_persona",
            "consistency_world",
            "consistency_world_in_window",
            "consistency_world_visible_share",
            "consistency_engine_persona",
            "consistency_engine_world",
        ),
    ),
    (
        "LLM judge",
        (
            "judge_coherence",
            "judge_creativity",
            "judge_fluency",
            "judge_instruction_following",
            "judge_n",
            "judge_errors",
        ),
    ),
    ("Robustness and cost", ("robust_ok", "tokens_generated", "time_s")),
)
LOWER_IS_BETTER = {
    "self_bleu",
    "repetition",
    "story_leakage",
    "narrative_ppl",
    "gsm_ppl",
    "mixed_ppl",
    "time_s",
}


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def _rows(results: dict, keys: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """(present keys, one row per system) for a table; keys no system has are left out."""
    systems = results["systems"]
    keys = tuple(k for k in keys if any(systems[s].get(k) is not None for s in systems))
    return list(keys), [[s, *(fmt(systems[s].get(k)) for k in keys)] for s in systems]


# ---------------------------------------------------------------- plots


def plots(results: dict, folder: Path) -> dict[str, Path]:
    """Write the PNGs; {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    systems = results["systems"]
    names = list(systems)
    out: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out[name] = path

    def bars(name: str, keys: list[str], title: str, log: bool = False) -> None:
        keys = [k for k in keys if any(systems[s].get(k) is not None for s in names)]
        if not keys:
            return
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 3.6))
        width = 0.8 / len(keys)
        for j, k in enumerate(keys):
            vals = [systems[s].get(k) or 0.0 for s in names]
            ax.bar([i + j * width for i in range(len(names))], vals, width, label=k)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20, ha="right")
        if log:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
        save(fig, name)

    bars("reasoning", ["gsm_strict", "gsm_flexible", "mixed_strict"], "GSM exact match (held-out)")
    bars(
        "narrative",
        ["distinct_1", "distinct_2", "distinct_3", "self_bleu", "repetition"],
        "Narrative diversity",
    )
    bars(
        "perplexity",
        ["gsm_ppl", "narrative_ppl", "mixed_ppl"],
        "Held-out perplexity (lower is better)",
        log=True,
    )

    pts = [(s, systems[s].get("gsm_flexible"), systems[s].get("distinct_2")) for s in names]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for s, x, y in pts:
            ax.scatter(x, y, s=60)
            ax.annotate(s, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel("precision: GSM flexible exact match")
        ax.set_ylabel("creativity: distinct-2 of stories")
        ax.set_title("The trade-off: up and right is better")
        save(fig, "tradeoff")

    for system, g in results.get("gear", {}).items():
        per_layer = g.get("per_layer_usage") or {}
        if not per_layer:
            continue
        pathways = results["pathways"]
        domains = list(per_layer)
        shown = pathways[:1] if len(pathways) == 2 else pathways  # with 2 pathways one map says it all
        fig, axes = plt.subplots(
            1, len(shown), figsize=(2.2 + 1.1 * len(domains) * len(shown), 4.6), squeeze=False
        )
        for ax, p in zip(axes[0], shown, strict=True):
            k = pathways.index(p)
            grid = [[per_layer[d][layer][k] for d in domains] for layer in range(len(per_layer[domains[0]]))]
            im = ax.imshow(grid, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_xticks(range(len(domains)), domains, rotation=20, ha="right")
            ax.set_ylabel("layer")
            ax.set_title(f"gate of {p!r}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.05)
        fig.suptitle(f"{system}: per-layer pathway usage by prompt domain", fontsize=10)
        save(fig, f"layers_{system}")
    return out


# ---------------------------------------------------------------- markdown and html


def _intro(results: dict) -> list[tuple[str, str]]:
    """(label, text) lines describing what was evaluated on what."""
    t, d = results["target"], results["data"]
    lines = [
        ("Evaluated", f"{t['kind']} {t['path']} (pathways: {', '.join(results['pathways'])})"),
        (
            "Reasoning set",
            f"{d['gsm']['n']} held-out {d['gsm']['source']} problems, seed {d['gsm']['seed']}, "
            f"{d['gsm']['fewshot']}-shot; {d['gsm']['overlap_dropped']} overlapping problems "
            f"dropped (checked against {d['overlap_checked_against']})",
        ),
        ("Narrative set", f"{d['narrative']['n']} records from {d['narrative']['origin']}"),
        ("Mixed set", f"{d['mixed']['n']} records from {d['mixed']['origin']}"),
    ]
    if "gsm_file" in d:
        f = d["gsm_file"]
        lines.append(
            ("GSM file", f"{f['n']} problems from {f['path']}, {f.get('overlap', 0)} also trained on")
        )
    for name, why in results.get("missing", {}).items():
        lines.append((f"Missing: {name}", why))
    for note in results.get("notes", []):
        lines.append(("Note", note))
    return lines


def _robustness_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = [
        "system",
        "category",
        "n",
        "errors",
        "terminated",
        "gates finite",
        "truncated",
        "usage",
        "switches/100",
    ]
    rows = []
    for system, r in results.get("robustness", {}).items():
        for cat, c in r["categories"].items():
            usage = ", ".join(f"{p} {w:.2f}" for p, w in (c["usage"] or {}).items())
            rows.append(
                [
                    system,
                    cat,
                    str(c["n"]),
                    str(len(c["errors"])),
                    str(c["terminated"]),
                    fmt(c["gates_finite"]),
                    str(c["truncated"]),
                    usage,
                    fmt(c["switches_per_100"]),
                ]
            )
    return head, rows


def _usage_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["system", "domain", *results["pathways"], "switches/100"]
    rows = []
    for system, g in results.get("gear", {}).items():
        for domain, usage in (g.get("usage_by_domain") or {}).items():
            rows.append(
                [
                    system,
                    domain,
                    *(fmt(usage.get(p)) for p in results["pathways"]),
                    fmt((g.get("switches_per_100_by_domain") or {}).get(domain)),
                ]
            )
    return head, rows


PAIRED = "Paired differences (same items; paired bootstrap 95 % CI, exact McNemar)"


def _paired_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """A minus B on the same items: accuracy points (McNemar p) and perplexity change per record kind."""
    head = ["A − B", "what", "n", "difference", "95 % CI", "McNemar p"]
    rows = []
    for row in results.get("paired", []):
        pair = f"{row['a']} − {row['b']}"
        for key, r in row.items():
            if key in ("a", "b") or not r:
                continue
            if "diff" in r:
                lo, hi = r["ci"]
                diff, ci, p = (
                    f"{100 * r['diff']:+.1f} pts",
                    f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
                    f"{r['p']:.3g}",
                )
                rows.append([pair, f"{key} accuracy", str(r["n"]), diff, ci, p])
            else:
                lo, hi = r["ppl_change_ci"]
                diff, ci = f"{100 * r['ppl_change']:+.1f} %", f"[{100 * lo:+.1f}, {100 * hi:+.1f}] %"
                rows.append([pair, key.replace("_nll", " perplexity"), str(r["n"]), diff, ci, "–"])
    return head, rows


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(results: dict, images: dict[str, Path], folder: Path) -> str:
    parts = [f"# Qwythos evaluation: {results['target']['path']}", ""]
    parts += [f"- **{k}:** {v}" for k, v in _intro(results)] + [""]
    for title, keys in TABLES:
        head, rows = _rows(results, keys)
        if head:
            parts += [f"## {title}", "", md_table(["system", *head], rows), ""]
    head, rows = _paired_rows(results)
    if rows:
        parts += [f"## {PAIRED}", "", md_table(head, rows), ""]
    head, rows = _usage_rows(results)
    if rows:
        parts += ["## Pathway usage by prompt domain (generated tokens)", "", md_table(head, rows), ""]
    head, rows = _robustness_rows(results)
    if rows:
        parts += ["## Robustness", "", md_table(head, rows), ""]
    if images:
        parts += ["## Plots", ""] + [f"![{n}]({p.relative_to(folder)})" for n, p in images.items()] + [""]
    parts += ["## Hashes", "", "```json", json.dumps(results["hashes"], indent=2), "```", ""]
    return "\n".join(parts)


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;margin:.5em 0}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
    ".best{font-weight:bold;background:#e8f5e9}"
)


def html_table(head: list[str], rows: list[list[str]], best: dict[int, str] | None = None) -> str:
    """best: {column index: 'max'|'min'} marks the best numeric cell of those columns."""
    marks = set()
    for col, how in (best or {}).items():
        vals = [(float(r[col]), i) for i, r in enumerate(rows) if _number(r[col])]
        if len(vals) > 1:
            target = (max if how == "max" else min)(v for v, _ in vals)
            marks |= {(i, col) for v, i in vals if v == target}
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        cells = "".join(
            f"<td{' class=best' if (i, j) in marks else ''}>{html.escape(c)}</td>" for j, c in enumerate(r)
        )
        out.append(f"<tr>{cells}</tr>")
    return "".join(out) + "</table>"


def _number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def html_page(title: str, body: list[str]) -> str:
    return (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>"
    )


def inline_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_report(results: dict, images: dict[str, Path]) -> str:
    body = [f"<h1>Qwythos evaluation: {html.escape(str(results['target']['path']))}</h1><ul>"]
    body += [f"<li><b>{html.escape(k)}:</b> {html.escape(str(v))}</li>" for k, v in _intro(results)]
    body.append("</ul>")
    for title, keys in TABLES:
        head, rows = _rows(results, keys)
        if head:
            best = {j + 1: ("min" if k in LOWER_IS_BETTER else "max") for j, k in enumerate(head)}
            body += [f"<h2>{html.escape(title)}</h2>", html_table(["system", *head], rows, best)]
    head, rows = _paired_rows(results)
    if rows:
        body += [f"<h2>{html.escape(PAIRED)}</h2>", html_table(head, rows)]
    head, rows = _usage_rows(results)
    if rows:
        body += ["<h2>Pathway usage by prompt domain (generated tokens)</h2>", html_table(head, rows)]
    head, rows = _robustness_rows(results)
    if rows:
        body += ["<h2>Robustness</h2>", html_table(head, rows)]
    if images:
        body += ["<h2>Plots</h2>"] + [inline_image(p, n) for n, p in images.items()]
    samples = results.get("examples", {})
    if samples:
        body.append("<h2>Example generations</h2>")
        for system, by_task in samples.items():
            items = "".join(
                f"<h4>{html.escape(task)}</h4><pre>{html.escape(text)}</pre>"
                for task, text in by_task.items()
            )
            body.append(f"<details><summary>{html.escape(system)}</summary>{items}</details>")
    meta = {"hashes": results["hashes"], "config": results["config"], "timing": results.get("timing")}
    body += ["<h2>Config and hashes</h2>", f"<pre>{html.escape(json.dumps(meta, indent=2))}</pre>"]
    return html_page("Qwythos evaluation", body)


def write_report(results: dict, folder: Path) -> dict[str, Path]:
    """plots/*.png, report.md, report.html in ``folder``."""
    images = plots(results, folder / "plots")
    (folder / "report.md").write_text(markdown(results, images, folder))
    (folder / "report.html").write_text(html_report(results, images))
    return {"report.md": folder / "report.md", "report.html": folder / "report.html", **images}


# ---------------------------------------------------------------- comparing evaluations


def compare_tables(named: dict[str, dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per metric group: rows = (system, metric), one column per evaluation (+ delta for two)."""
    labels = list(named)
    systems = []
    for res in named.values():
        systems += [s for s in res["systems"] if s not in systems]
    tables = []
    for title, keys in TABLES:
        rows = []
        for s in systems:
            for k in keys:
                vals = [res["systems"].get(s, {}).get(k) for res in named.values()]
                if all(v is None for v in vals):
                    continue
                row = [s, k, *(fmt(v) for v in vals)]
                if len(vals) == 2:
                    a, b = vals
                    num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
                    row.append(fmt(float(b) - float(a)) if num else "")
                rows.append(row)
        if rows:
            tables.append(
                (title, ["system", "metric", *labels, *(["B - A"] if len(labels) == 2 else [])], rows)
            )
    head, rows = _paired_rows({"paired": across_evaluations(named)})
    if rows:
        tables.append((f"{PAIRED}: each evaluation against A, system by system", head, rows))
    return tables


def across_evaluations(named: dict[str, dict]) -> list[dict]:
    """Each system of each later evaluation minus the same system in the first, paired on the items both
    scored (same problem ids and record ids: the same held-out sets)."""
    (first, base), *rest = named.items()
    rows = []
    for label, res in rest:
        for s in res.get("per_item", {}):
            if s in base.get("per_item", {}):
                a, b = f"{s} ({label.split(':')[0]})", f"{s} ({first.split(':')[0]})"
                per_item = {a: res["per_item"][s], b: base["per_item"][s]}
                rows += stats.compare(per_item, pairs=[(a, b)])
    return rows


HELDOUT = {
    "gsm_heldout": "GSM problems (gsm_*)",
    "narrative_heldout": "held-out narrative records (narrative_ppl, gate_acc_narrative)",
    "mixed_heldout": "held-out mixed records (mixed_ppl, gate_acc_spans)",
}


def heldout_warnings(named: dict[str, dict]) -> list[str]:
    """A warning per held-out set that differs between the evaluations (each run holds out what it did not
    train on): figures on it are not comparable across them."""
    out = []
    for key, what in HELDOUT.items():
        hashes = {res["hashes"].get(key) for res in named.values()}
        if len(hashes) > 1:
            out.append(
                f"different {what} in these evaluations: compare those figures with care "
                "(narrative.min_heldout=100000 makes every run use the embedded held-out texts)"
            )
    return out


def compare_markdown(named: dict[str, dict]) -> str:
    parts = ["# Qwythos evaluation: comparison", ""]
    parts += [
        f"- **{label}:** {res['target']['path']} (model {res['hashes'].get('model')})"
        for label, res in named.items()
    ]
    parts += [f"- **Warning:** {w}" for w in heldout_warnings(named)] + [""]
    for title, head, rows in compare_tables(named):
        parts += [f"## {title}", "", md_table(head, rows), ""]
    return "\n".join(parts)


def compare_html(named: dict[str, dict]) -> str:
    body = ["<h1>Qwythos evaluation: comparison</h1><ul>"]
    body += [
        f"<li><b>{html.escape(label)}:</b> {html.escape(str(res['target']['path']))}</li>"
        for label, res in named.items()
    ]
    body += [f"<li><b>Warning:</b> {html.escape(w)}</li>" for w in heldout_warnings(named)] + ["</ul>"]
    for title, head, rows in compare_tables(named):
        body += [f"<h2>{html.escape(title)}</h2>", html_table(head, rows)]
    return html_page("Qwythos evaluation: comparison", body)


# ---------------------------------------------------------------- the headline (terminal)

HEADLINE = ("gsm_strict", "gsm_flexible", "distinct_2", "self_bleu", "narrative_ppl", "switches_per_100")


def headline(results: dict) -> str:
    """The headline table (markdown) printed by `qwythos eval` and the quickstart, the missing systems, what
    gsm_* measured, and the paired differences on those problems (A − B, 95 % CI, McNemar p)."""
    keys, rows = _rows(results, HEADLINE)
    lines = [md_table(["system", *keys], rows)]
    lines += [f"(no {name}: {why})" for name, why in results.get("missing", {}).items()]
    gsm = results.get("data", {}).get("gsm", {})
    if gsm:
        lines.append(f"gsm_*: {gsm.get('n')} held-out {gsm.get('source')} problems (seed {gsm.get('seed')})")
    paired = [r for r in _paired_rows(results)[1] if r[1] == "gsm accuracy"]
    if paired:
        lines.append("paired on those problems (A − B, 95 % CI, McNemar p):")
        lines += [f"  {pair}: {diff} {ci}, p = {p}" for pair, _, _, diff, ci, p in paired]
    return "\n".join(lines)
