"""Qwythos's engine against llama.cpp on the same hybrid, in one run (issue 17): decode tok/s side by side.

The hybrid is bench_decode.py's (the real SmolLM2-135M base, two pathways with LoRA r16 non-zero and a random
router: the speed of a trained one). Qwythos decodes it natively; llama.cpp decodes the same model exported by
`qwythos export --to gguf` (`mixtral_checkpoint`: every pathway a dense expert), soft (both experts read per
token) and top1 (one), at f32, bf16 and q8_0. The dense base runs in llama.cpp too: the embedded SmolLM2 GGUF
requantised by `llama-quantize` to each type (exactly the weights Qwythos dequantises from it).

Configurations: bs1 after a 32-token prompt ("short"), bs1 after a 2,000-token context ("long"), and 8
sequences decoded together after short prompts ("batch8", aggregate tok/s; llama.cpp: llama-batched-bench).
Qwythos: the engine's decode steps timed after the prefill (a DecodeBatch, median of 3), with its default
threads (OMP_WAIT_POLICY=PASSIVE: one decode thread). llama.cpp: llama-bench / llama-batched-bench
at -t 2 (both cores: its best here) and the time of the generated tokens only. Every configuration runs in its
own process and configurations alternate across repeats; medians and ratios are printed and written to
bench/results/llamacpp.json. Qwythos has no int8 decode yet, so q8_0 is reported for llama.cpp alone.

Needs llama.cpp binaries (../shared/tools/build-llamacpp builds them; add TARGETS=llama-batched-bench):
skips cleanly, exit 0, without them. Not part of CI.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_llamacpp.py [--bin DIR] [--repeats 2] [--tokens 33]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_decode as bd  # noqa: E402

CONTEXTS = {"short": 32, "long": 2000}
PRECISIONS = ("f32", "bf16")
DEFAULT_BIN = Path(os.environ.get("LLAMACPP_BIN", Path.home() / ".cache/llama.cpp/build/bin"))


# ---------------------------------------------------------------- Qwythos (a child process per configuration)


def qwythos(mode: str, precision: str, context: str, rows: int, tokens: int) -> dict:
    """Decode tok/s of the engine's decode steps after the prefill, as llama-bench's tg times its tokens."""
    import torch

    from qwythos.inference.engine import DecodeBatch, Engine, Request
    from qwythos.inference.sampling import SamplingParams
    from qwythos.model.base import load_tokenizer
    from qwythos.model.block import Routing

    torch.manual_seed(0)
    model, folder = bd.pathway_model("bfloat16" if precision == "bf16" else "float32")
    engine = Engine(model, load_tokenizer(folder))
    n = CONTEXTS[context]
    prompts = [[1000 + (7 * r + i) % 20000 for i in range(n)] for r in range(rows)]
    rates = []
    with torch.inference_mode():
        for _ in range(3):
            batch = DecodeBatch(engine, Routing(mode), trace=False)
            params = SamplingParams(max_new_tokens=tokens + 4, ignore_eos=True)
            batch.add([Request(p, params) for p in prompts])  # the prefill
            batch.step()  # warm
            t = time.perf_counter()
            for _ in range(tokens - 1):
                batch.step()
            rates.append(rows * (tokens - 1) / (time.perf_counter() - t))
    return {"value": statistics.median(rates)}


# ---------------------------------------------------------------- llama.cpp


def llama(binary: Path, gguf: Path, context: str, rows: int, tokens: int) -> dict:
    if rows == 1:
        cmd = [binary / "llama-bench", "-m", gguf, "-t", "2", "-p", "0", "-n", str(tokens - 1)]
        cmd += ["-d", str(CONTEXTS[context]), "-r", "3", "-o", "json"]
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True)
        return {"value": json.loads(out.stdout)[0]["avg_ts"]}
    n = CONTEXTS[context]
    cmd = [binary / "llama-batched-bench", "-m", gguf, "-t", "2", "-c", str(rows * (n + tokens) + 64)]
    cmd += ["-b", "512", "-ub", "512", "-npp", str(n), "-ntg", str(tokens - 1), "-npl", str(rows)]
    cmd += ["--output-format", "jsonl"]
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True)
    rows_out = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {"value": rows_out[-1]["speed_tg"]}


def prepare(binary: Path, work: Path) -> dict[str, Path]:
    """GGUF files: the hybrid (soft/top1 x f32/bf16/q8_0) by our exporter, the dense base requantised."""
    import torch

    from qwythos.model.base import embedded_gguf
    from qwythos.model.gguf import export_gguf

    files: dict[str, Path] = {}
    torch.manual_seed(0)  # the child's model: same seed, same weights
    model, folder = bd.pathway_model("float32")
    for mode in ("soft", "top1"):
        for quant in ("f32", "bf16", "q8_0"):
            path = work / f"hybrid-{mode}-{quant}.gguf"
            if not path.is_file():
                export_gguf(model, path, folder, mode=mode, quant=quant)
            files[f"{mode}:{quant}"] = path
    for quant, name in (("f32", "F32"), ("bf16", "BF16"), ("q8_0", "Q8_0")):
        path = work / f"dense-{quant}.gguf"
        if not path.is_file():
            cmd = [binary / "llama-quantize", "--allow-requantize", embedded_gguf(), path, name]
            subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True)
        files[f"dense:{quant}"] = path
    return files


def agreement(binary: Path, gguf: Path, tokens: int = 24) -> dict:
    """Greedy continuations of one prompt by llama.cpp (the soft f32 GGUF) and by our engine (the model it
    was exported from): llama.cpp runs our export unchanged, and computes the same function."""
    import torch

    from qwythos.inference.engine import Engine, Request
    from qwythos.inference.sampling import SamplingParams
    from qwythos.model.base import load_tokenizer
    from qwythos.model.block import Routing

    prompt = "Once upon a time, in a quiet village by the sea,"
    cmd = [binary / "llama-completion", "-m", gguf, "-p", prompt, "-n", str(tokens), "--temp", "0", "-no-cnv"]
    cmd += ["--no-display-prompt", "--simple-io", "--no-warmup", "-t", "2", "-s", "0"]
    theirs = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True).stdout
    torch.manual_seed(0)
    model, folder = bd.pathway_model("float32")
    tok = load_tokenizer(folder)
    engine = Engine(model, tok)
    params = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
    ours = engine.generate([Request(tok.encode(prompt), params)], Routing("soft"))[0].text
    shared = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
    )
    return {
        "prompt": prompt,
        "qwythos": ours,
        "llama_cpp": theirs,
        "shared_chars": shared,
        "chars": len(ours),
    }


def configurations(batched: bool) -> list[tuple[str, ...]]:
    """(system, model key, context, rows): our engine and llama.cpp on the same GGUF-exported hybrid."""
    out = []
    for precision in PRECISIONS:
        for context, rows in (("short", 1), ("long", 1), ("short", 8)):
            if rows > 1 and not batched:
                continue
            for mode in ("soft", "top1"):
                out.append(("qwythos", f"{mode}:{precision}", context, str(rows)))
                out.append(("llama.cpp", f"{mode}:{precision}", context, str(rows)))
            out.append(("llama.cpp", f"dense:{precision}", context, str(rows)))
    out += [("llama.cpp", f"{m}:q8_0", "short", "1") for m in ("soft", "top1", "dense")]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bin", type=Path, default=DEFAULT_BIN, help="llama.cpp's build/bin")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tokens", type=int, default=33)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "qwythos-bench-llamacpp")
    p.add_argument("--out", type=Path, default=Path("bench/results/llamacpp.json"))
    p.add_argument("--child", default=None)
    a = p.parse_args()
    if a.child:
        mode, precision, context, rows = a.child.split(":")
        print(json.dumps(qwythos(mode, precision, context, int(rows), a.tokens)))
        return
    if not (a.bin / "llama-bench").is_file():
        print(f"skip: no llama.cpp binaries in {a.bin} (build them with ../shared/tools/build-llamacpp)")
        return
    batched = (a.bin / "llama-batched-bench").is_file()
    if not batched:
        print("note: no llama-batched-bench: batch 8 skipped (TARGETS=llama-batched-bench build-llamacpp)")
    a.work.mkdir(parents=True, exist_ok=True)
    files = prepare(a.bin, a.work)
    agree = agreement(a.bin, files["soft:f32"])
    print(f"greedy agreement with llama.cpp (soft f32): {agree['shared_chars']}/{agree['chars']} characters")
    configs = configurations(batched)
    raw: dict[str, list[float]] = {}
    for r in range(a.repeats):
        for system, key, context, rows in configs:
            name = f"{system} {key} {context} bs{rows}"
            if system == "qwythos":
                mode, precision = key.split(":")
                cmd = [sys.executable, __file__, "--child", f"{mode}:{precision}:{context}:{rows}"]
                out = subprocess.run(cmd + ["--tokens", str(a.tokens)], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
                value = json.loads(out.stdout.strip().splitlines()[-1])["value"]
            else:
                value = llama(a.bin, files[key], context, int(rows), a.tokens)["value"]
            raw.setdefault(name, []).append(value)
            print(f"repeat {r + 1}/{a.repeats} {name:34s} {value:8.2f} tok/s", flush=True)
    med = {k: statistics.median(v) for k, v in raw.items()}
    ratios = {}
    for name, value in med.items():
        system, key, context, rows = name.split()
        if system != "qwythos":
            continue
        precision = key.split(":")[1]
        ratios[name] = {
            "vs_llamacpp_same_hybrid": value / med[f"llama.cpp {key} {context} {rows}"],
            "vs_llamacpp_dense_base": value / med[f"llama.cpp dense:{precision} {context} {rows}"],
        }
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")]
    summary = {
        "decode_tok_s": med,
        "ratios": ratios,
        "greedy_agreement_soft_f32": agree,
        "setup": {
            "model": "SmolLM2-135M hybrid, 2 pathways, LoRA r16 (bench_decode.pathway_model)",
            "decode_tokens": a.tokens - 1,
            "contexts": CONTEXTS,
            "repeats": a.repeats,
            "cpu": f"{names[0] if names else '?'} ({platform.machine()}, {os.cpu_count()} cores)",
            "llama_cpp_threads": 2,
            "qwythos_threads": "default (OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "unset") + ")",
        },
        "raw": raw,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
