"""The `qwythos` command line: one verb -> one typed function (tests call those functions directly).

Verbs parse arguments here and import their subsystem lazily, so `qwythos --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from .config import ConfigError

log = logging.getLogger("qwythos")
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ConfigError, KeyError)


# ---------------------------------------------------------------- model: init / export / generate


def _init(sub) -> None:
    p = sub.add_parser("init", help="write an untrained pathway model folder on a base")
    p.add_argument("--base", default=None, help="HF folder or .gguf file (default: embedded SmolLM2-135M)")
    p.add_argument("--out", required=True, type=Path, help="new model folder")
    p.add_argument("--pathways", default="reasoning,narrative", help="comma-separated pathway names")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank of each pathway")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: 2 x rank)")
    p.add_argument("--router-init", default="zero", choices=["zero", "random"], help="router initialisation")
    p.add_argument(
        "--router-prompts",
        type=Path,
        default=None,
        help="JSON {pathway: [prompt, ...]}: initialise the router from these prompts",
    )
    p.add_argument("--embed-base", action="store_true", help="copy the base weights into the folder")
    p.add_argument("--seed", type=int, default=0)

    def run(a):
        from .model.api import init_model

        prompts = json.loads(a.router_prompts.read_text()) if a.router_prompts else None
        out = init_model(
            base=a.base,
            out=a.out,
            pathways=a.pathways.split(","),
            rank=a.rank,
            alpha=a.alpha,
            router_init=a.router_init,
            router_prompts=prompts,
            embed_base=a.embed_base,
            seed=a.seed,
        )
        print(out)

    p.set_defaults(func=run)


def _export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a pathway model as a Mixtral checkpoint folder or one Mixtral GGUF file"
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument(
        "--to",
        default="mixtral",
        choices=["mixtral", "gguf"],
        help="mixtral: safetensors folder (transformers, vLLM); gguf: one file (llama.cpp, Ollama)",
    )
    p.add_argument("--out", required=True, type=Path, help="new folder (mixtral) or FILE.gguf (gguf)")
    p.add_argument(
        "--mode",
        default="soft",
        choices=["soft", "top1"],
        help="soft: every expert blended (num_experts_per_tok=P); top1: one expert per token",
    )
    p.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="mixtral only (float32)"
    )
    p.add_argument(
        "--quant",
        default=None,
        choices=["f32", "f16", "bf16", "q8_0", "q4_0"],
        help="gguf only (default f16); K-quants: llama-quantize FILE out.gguf Q4_K_M",
    )

    def run(a):
        from .model.api import export_model

        print(export_model(a.model_dir, a.out, mode=a.mode, dtype=a.dtype, to=a.to, quant=a.quant))

    p.set_defaults(func=run)


def _generation_args(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default 0)")
    p.add_argument("--top-p", type=float, default=None, help="default 1.0")
    p.add_argument("--top-k", type=int, default=None, help="default 0 (off)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="default 1.0 (chat: 1.1)")
    p.add_argument(
        "--gear-sampling",
        default=None,
        help="per-pathway sampling, chosen per token by the gate: 'reasoning:t=0;narrative:t=0.8,top_p=0.95'"
        " (the default of chat and generate --chat; 'off', or --temperature/--top-p/--top-k, turns it off)",
    )
    p.add_argument(
        "--gear-policy", default="argmax", choices=["argmax", "blend"], help="argmax pathway or weighted T"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mode", default=None, help="soft | top1 | force=<pathway> (default: the model's)")
    p.add_argument(
        "--gear", action="append", default=[], help="pathway=offset logit bias, e.g. reasoning=+1.5"
    )
    p.add_argument("--no-color", action="store_true", help="mark pathways with [name] instead of colour")
    _dtype_arg(p)


def _dtype_arg(p) -> None:
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weights (bf16: faster on CPU)"
    )


def _sampling(a, chat: bool, pathways: list[str]):
    """(SamplingParams, GearSampling or None): in chat, gear-conditioned sampling (for the pathways the model
    has) and a mild repetition penalty unless the flags ask otherwise; elsewhere plain greedy unless asked."""
    from .inference import sampling as s

    explicit = any(v is not None for v in (a.temperature, a.top_p, a.top_k))
    params = s.SamplingParams(
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature or 0.0,
        top_p=1.0 if a.top_p is None else a.top_p,
        top_k=a.top_k or 0,
        repetition_penalty=a.repetition_penalty or (s.CHAT_REPETITION_PENALTY if chat else 1.0),
        seed=a.seed,
    )
    if a.gear_sampling == "off":
        return params, None
    if a.gear_sampling:
        return params, s.parse_gear_sampling(a.gear_sampling, a.gear_policy)
    if chat and not explicit:
        return params, s.for_model(
            s.GearSampling(s.DEFAULT_GEAR_SAMPLING.per_pathway, a.gear_policy), pathways
        )
    return params, None


def _generate(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate text with the gate trace (native folder, Mixtral folder or .gguf)"
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--json", action="store_true", help="print {text, token_ids, trace} as JSON")
    _generation_args(p)

    def run(a):
        from .inference.api import generate, load_engine

        engine = load_engine(a.model_dir, a.dtype)
        params, gs = _sampling(a, a.chat, engine.pathways)
        result = generate(
            engine,
            a.prompt,
            chat=a.chat,
            params=params,
            mode=a.mode,
            gear=_gear(a.gear),
            gear_sampling=gs,
        )
        if a.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            from .inference.trace import render

            print(
                render(
                    result["trace"],
                    result["pathways"],
                    color=not a.no_color and sys.stdout.isatty() or os.environ.get("FORCE_COLOR") == "1",
                )
            )

    p.set_defaults(func=run)


def _gear(items: list[str]) -> dict[str, float]:
    from .inference.engine import parse_gear

    return parse_gear(items)


def _quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="the main job on the embedded defaults")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--no-color", action="store_true")

    def run(a):
        from .quickstart import quickstart

        quickstart(a.out, color=not a.no_color)

    p.set_defaults(func=run)


# ---------------------------------------------------------------- training


def _train(sub) -> None:
    p = sub.add_parser("train", help="train pathways then the gate (branch-train-mix) from a curated set")
    p.add_argument("config", nargs="?", type=Path, default=None, help="run YAML (configs/*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--rounds", type=int, default=None, help="active-learning rounds after the stages")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.batch_size=8")

    def run(a):
        from .curate.select import next_round
        from .train.api import train_from_files

        if a.config is not None and "=" in str(a.config) and not a.config.is_file():  # overrides only
            a.overrides, a.config = [str(a.config), *a.overrides], None
        print(train_from_files(a.config, a.out, a.overrides, a.resume, a.rounds, selector=next_round))

    p.set_defaults(func=run)


# ---------------------------------------------------------------- curation


def _curate(sub) -> None:
    p = sub.add_parser("curate", help="curate raw data into a budgeted, labelled, curriculum-ordered set")
    p.add_argument("--input", action="append", default=[], type=Path, help="JSONL, Parquet or CSV (repeat)")
    p.add_argument("--decontaminate", action="append", default=[], type=Path, help="evaluation set (repeat)")
    p.add_argument("--config", type=Path, default=None, help="curate.yaml")
    p.add_argument("--preset", default=None, help="built-in preset, e.g. quickstart")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. dedup.near.threshold=0.8")
    p.add_argument(
        "--select-from",
        type=Path,
        default=None,
        help="active-learning round: re-score this curated folder's pool with --model, write the next batch",
    )
    p.add_argument("--model", type=Path, default=None, help="model folder for --select-from")
    p.add_argument("--exclude", type=Path, default=None, help="file of record ids already used, one per line")

    def run(a):
        if a.select_from is not None:
            from .config import load_config
            from .curate.config import CurateConfig
            from .curate.select import select_round

            if a.model is None:
                raise ValueError("--select-from needs --model (the model whose loss/IFD ranks the pool)")
            cfg = load_config(CurateConfig, a.config, a.overrides)
            exclude = set(a.exclude.read_text().split()) if a.exclude else set()
            print(select_round(a.select_from, a.model, a.out, cfg.select.budgets, exclude))
            return
        from .curate.run import curate

        print(
            curate(
                inputs=a.input,
                out=a.out,
                decontaminate=a.decontaminate,
                config=a.config,
                preset=a.preset,
                executor=a.executor,
                overrides=a.overrides,
            )
        )

    p.set_defaults(func=run)


# ---------------------------------------------------------------- synthetic data


def _synth(sub) -> None:
    p = sub.add_parser(
        "synth", help="generate verified synthetic data with a teacher (local or OpenAI-compatible)"
    )
    p.add_argument("--config", type=Path, default=None, help="synth.yaml (e.g. configs/synth-seed.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run folder (rerun the same command to resume)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. tasks.narrative=100 teacher.kind=openai"
    )

    def run(a):
        from .synth.run import synth

        print(synth(out=a.out, config=a.config, overrides=a.overrides))

    p.set_defaults(func=run)


# ---------------------------------------------------------------- serving: chat / serve


def _chat(sub) -> None:
    p = sub.add_parser("chat", help="interactive chat; each token coloured by its pathway, /gear to steer")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--system", default=None, help="system prompt")
    _generation_args(p)

    def run(a):
        from .inference.api import load_engine
        from .serve.terminal import run_chat

        color = not a.no_color and (sys.stdout.isatty() or os.environ.get("FORCE_COLOR") == "1")
        engine = load_engine(a.model_dir, a.dtype)
        params, gs = _sampling(a, True, engine.pathways)
        run_chat(engine, sys.stdin, sys.stdout, params, color, a.mode, _gear(a.gear), a.system, gs)

    p.set_defaults(func=run)


def _recall_arg(p) -> None:
    p.add_argument(
        "--recall",
        default="auto",
        choices=("auto", "minilm", "lexical"),
        help="recall of old turns: BM25 + recency, plus the offline MiniLM (auto: when installed)",
    )


def _dialogue(sub) -> None:
    p = sub.add_parser("dialogue", help="play a character card in the terminal on the dialogue engine")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--card", default=None, help="a SillyTavern card (PNG or JSON) for a new session")
    p.add_argument("--session", type=int, default=None, help="resume this session of the store instead")
    p.add_argument("--player", default="Traveller", help="the player's name in a new session")
    p.add_argument(
        "--db",
        default=None,
        help="the SQLite store, shared with serve (default: $QWYTHOS_HOME/dialogue.sqlite, else MODEL_DIR)",
    )
    p.add_argument("--budget", type=int, default=1024, help="prompt tokens per turn")
    p.add_argument("--reply-tokens", type=int, default=80)
    p.add_argument("--no-color", action="store_true")
    p.add_argument("--dtype", default="float32")
    _recall_arg(p)

    def run(a):
        from .dialogue import play
        from .dialogue.memory import recall_embedder
        from .dialogue.store import Store, default_db
        from .dialogue.turn import Dialogue
        from .inference.api import load_engine

        color = not a.no_color and (sys.stdout.isatty() or os.environ.get("FORCE_COLOR") == "1")
        engine = load_engine(a.model_dir, a.dtype)
        with Store(default_db(a.model_dir, a.db)) as store:
            d = Dialogue(engine, store, recall_embedder(a.recall))
            settings = {"budget": a.budget, "reply_tokens": a.reply_tokens}
            sid = play.start(d, a.card, a.player, a.session, settings)
            play.run(d, sid, sys.stdin, sys.stdout, color)

    p.set_defaults(func=run)


def _serve(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server with live gear traces")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=None,
        help="bearer key for every route but /health (default: $QWYTHOS_API_KEY; none = open)",
    )
    p.add_argument("--model-name", default=None, help="the model id clients send (default: folder name)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="default: the model's context")
    p.add_argument("--max-total-tokens", type=int, default=None, help="prompt + completion limit")
    p.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger request bodies get 413"
    )
    _dtype_arg(p)
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=120.0,
        help="seconds to let in-flight requests finish on shutdown",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=None,
        help="the dialogue engine's SQLite file (default: $QWYTHOS_HOME/dialogue.sqlite, else in MODEL_DIR)",
    )
    p.add_argument(
        "--api-keys",
        type=Path,
        default=None,
        help="a file of keys, one per line ('OWNER KEY' or 'KEY'): each owner sees only its own sessions",
    )
    p.add_argument("--no-dialogue", action="store_true", help="serve the OpenAI routes only (no SQLite)")
    _recall_arg(p)

    def run(a):
        from .serve.server import serve

        serve(
            a.model_dir,
            host=a.host,
            port=a.port,
            api_key=a.api_key,
            model_name=a.model_name,
            max_batch=a.max_batch,
            max_queue=a.max_queue,
            max_prompt_tokens=a.max_prompt_tokens,
            max_total_tokens=a.max_total_tokens,
            max_body_bytes=a.max_body_bytes,
            graceful_timeout=a.graceful_timeout,
            dtype=a.dtype,
            db=a.db,
            api_keys_file=a.api_keys,
            dialogue=not a.no_dialogue,
            recall=a.recall,
        )

    p.set_defaults(func=run)


# ---------------------------------------------------------------- evaluation


def _eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run (hybrid vs base, dense LoRA, each pathway alone) into results.json + report",
        description="qwythos eval RUN_OR_MODEL_DIR --out DIR [--limit N] [--config eval.yaml] [key=value ...]"
        "  |  qwythos eval --compare RUN_A RUN_B [--out DIR]",
    )
    p.add_argument("target", nargs="?", type=Path, default=None, help="run folder or model folder")
    p.add_argument("--out", type=Path, default=None, help="evaluation folder (with --compare: optional)")
    p.add_argument("--limit", type=int, default=None, help="at most N items per task (a quick look)")
    p.add_argument("--config", type=Path, default=None, help="eval.yaml (keys of qwythos.eval.config)")
    p.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        default=None,
        metavar="RUN",
        help="put two or more evaluations side by side (run folders with eval/, or evaluation folders)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. gsm.n=50 gsm.fewshot=3")

    def run(a):
        from .eval.api import compare, evaluate
        from .eval.report import headline

        if a.compare is not None:
            if a.target is not None or a.overrides or a.limit is not None or a.config is not None:
                raise ValueError(
                    "--compare takes evaluations only: qwythos eval --compare RUN_A RUN_B [--out DIR]"
                )
            print(compare(a.compare, a.out)["markdown"])
            return
        if a.target is None:
            raise ValueError("pass a run or model folder: qwythos eval RUN_OR_MODEL_DIR --out DIR")
        if "=" in str(a.target) and not a.target.exists():  # overrides only
            raise ValueError(f"{a.target} looks like an override; the run or model folder comes first")
        if a.out is None:
            raise ValueError(f"--out is required: qwythos eval {a.target} --out {a.target / 'eval'}")
        results = evaluate(a.target, a.out, limit=a.limit, config=a.config, overrides=a.overrides)
        print(headline(results))
        print(f"\nreport: {a.out / 'report.html'}   results: {a.out / 'results.json'}")

    p.set_defaults(func=run)


# ---------------------------------------------------------------- benchmarks


def _bench(sub) -> None:
    p = sub.add_parser("bench", help="run one of the published benchmarks in bench/ (no name: list them)")
    p.add_argument("name", nargs="?", default=None, help="e.g. model, train, decode, curate")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark script")

    def run(a):
        import subprocess

        from .config import REPO

        scripts = {f.stem.removeprefix("bench_"): f for f in sorted((REPO / "bench").glob("bench_*.py"))}
        if a.name is None:
            print("\n".join(f"{k:12s} {v}" for k, v in scripts.items()))
            return
        if a.name not in scripts:
            raise ValueError(f"no benchmark {a.name!r}; available: {sorted(scripts)}")
        subprocess.run([sys.executable, str(scripts[a.name]), *a.args], check=True, cwd=REPO)

    p.set_defaults(func=run)


# ---------------------------------------------------------------- entry point

VERBS = (
    _init,
    _export,
    _generate,
    _quickstart,
    _curate,
    _synth,
    _train,
    _eval,
    _chat,
    _dialogue,
    _serve,
    _bench,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwythos", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for register in VERBS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Sleeping (not spinning) OpenMP workers: spinning threads collapse when another job shares the cores.
    # Must be set before torch loads; export OMP_WAIT_POLICY=ACTIVE on a dedicated machine for ~20% more.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # dotted overrides after options (argparse stops collecting positionals at the first option)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args.func(args)
    except USER_ERRORS as e:  # bad input named at the edge; under -v its traceback too (a bug can hide here)
        if args.verbose:
            traceback.print_exc()
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        hint = "" if args.verbose else " (qwythos -v shows the traceback)"
        print(f"qwythos {args.verb}: error: {msg}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
