"""The evaluation data, held out from training and checked for overlap with it.

Reasoning: reasoning-gym problems (``gsm.generator`` with ``gsm.args``, rendered by ``qwythos.gym`` exactly
as curation renders training inputs) from a seed the training data did not use; any problem whose question
also appears in the training set is dropped (and counted). A user file in GSM8K schema (``question``,
``answer``) is scored as given, and its overlap with the training set is counted and reported. Narrative
and mixed: records of the narrative source (``data/seed`` or the placeholder set) whose response the run did
not train on; too few, and the embedded held-out texts (``texts.py``) stand in.
Every set is hashed into results.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import gym
from ..config import ConfigError
from ..dataset import load_records, read_manifest, read_pool, read_records_jsonl
from ..records import Record
from . import texts

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
SEED_SET = REPO / "data" / "seed" / "seed.jsonl.gz"
PLACEHOLDER = REPO / "data" / "placeholder-narrative" / "placeholder.jsonl.gz"
# configs/curate-quickstart.yaml's reasoning input: what a bare model folder's overlap is checked against
QUICKSTART_REASONING = {
    "generator": "leg_counting",
    "args": {"min_animals": 2, "max_animals": 4, "max_instances": 9},
    "size": 800,
    "seed": 0,
}


@dataclass
class GsmProblem:
    id: str
    question: str
    answer: str  # a GSM8K solution ending '#### N', or the bare number
    solution: str = ""  # a worked solution, when known (scored by perplexity)


def normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def digest(items: list) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- what the model trained on


def training_records(dataset: str | None, narrative: Path) -> tuple[list[Record], str]:
    """The run's training records (a curated folder, with its active-learning pool, or a JSONL) and a note on
    what overlap is checked against.

    Without a readable training set (a bare model folder) the model is assumed to have trained on the
    quickstart preset: its reasoning problems and the whole narrative source."""
    if dataset:
        if not Path(dataset).exists() and (REPO / dataset).exists():  # relative to the checkout
            dataset = str(REPO / dataset)
        try:
            records, note = load_records(dataset), f"the run's training set {dataset}"
            if (Path(dataset) / "manifest.json").is_file():  # active-learning rounds train on pool records
                if read_manifest(Path(dataset))["shards"].get("pool"):
                    records, note = records + read_pool(dataset), note + " and its pool"
            return records, note
        except (OSError, ValueError) as e:
            log.warning(
                "cannot read the run's training set %s (%s); checking overlap against the "
                "quickstart preset's reasoning problems and the narrative source",
                dataset,
                e,
            )
    q = QUICKSTART_REASONING
    records = [
        Record(
            id=f"preset-{i}",
            source=q["generator"],
            pathway="reasoning",
            messages=[{"role": "user", "content": p.question}],
        )
        for i, p in enumerate(gym.problems(q["generator"], q["size"], q["seed"], q["args"]))
    ]
    return records + read_records(narrative), (
        f"the quickstart preset: {q['generator']} (size {q['size']}, seed {q['seed']}) "
        f"and all of {narrative.name}"
    )


# ---------------------------------------------------------------- reasoning


def _generated(generator: str, n: int, seed: int, args: dict) -> list[GsmProblem]:
    try:
        items = gym.problems(generator, n, seed, args)
    except ValueError as e:
        raise ConfigError(f"gsm.generator={generator} gsm.{e}") from None
    return [GsmProblem(p.id, p.question, p.answer, p.solution) for p in items]


def trained_questions(trained: list[Record]) -> set[str]:
    return {normalise_text(m["content"]) for r in trained for m in r.messages if m["role"] == "user"}


def heldout_gsm(
    n: int,
    seed: int,
    trained: list[Record],
    fewshot: int = 0,
    generator: str = "gsm_symbolic",
    args: dict | None = None,
) -> tuple[list, list, dict]:
    """(problems, few-shot examples, info): n held-out problems none of whose questions were trained on."""
    seen = trained_questions(trained)
    pool = _generated(generator, 2 * (n + fewshot) + 16, seed, args or {})
    fresh, dupes = [], set()
    for p in pool:
        key = normalise_text(p.question)
        if key in seen or key in dupes:
            continue
        dupes.add(key)
        fresh.append(p)
    overlap = sum(1 for p in pool if normalise_text(p.question) in seen)
    if len(fresh) < n + fewshot:
        raise ValueError(
            f"gsm.seed={seed}: only {len(fresh)} of {len(pool)} problems are not in the training set; "
            f"choose a gsm.seed further than the training inputs' size from their seed"
        )
    problems, shots = fresh[:n], fresh[n : n + fewshot]
    info = {
        "source": f"reasoning_gym:{generator}",
        "args": args or {},
        "seed": seed,
        "n": len(problems),
        "fewshot": len(shots),
        "overlap_dropped": overlap,
        "overlap_checked_against": len(seen),
        "hash": digest([p.question for p in problems + shots]),
    }
    return problems, shots, info


def read_gsm_file(path: str | Path) -> list[GsmProblem]:
    """Rows with ``question`` and ``answer`` (GSM8K schema) from a .jsonl or .json (a list) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gsm.file {path} does not exist; pass a JSONL file with question and answer")
    text = path.read_text()
    if path.suffix == ".json":
        rows = json.loads(text)
        numbered = list(enumerate(rows if isinstance(rows, list) else [], 1))
        if not isinstance(rows, list):
            raise ValueError(f"gsm.file {path}: a .json file must hold a list of {{question, answer}} rows")
    else:
        numbered = [(i, json.loads(line)) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    out = []
    for i, row in numbered:
        if not isinstance(row, dict) or not {"question", "answer"} <= set(row):
            raise ValueError(f"gsm.file {path}: row {i} needs 'question' and 'answer' (GSM8K schema)")
        answer = str(row["answer"])
        out.append(GsmProblem(f"file-{i}", str(row["question"]), answer, answer if "####" in answer else ""))
    if not out:
        raise ValueError(f"gsm.file {path} has no rows")
    return out


def file_overlap(problems: list[GsmProblem], trained: list[Record]) -> int:
    """How many of a user file's problems the run trained on (by exact text, whitespace and case folded)."""
    seen = trained_questions(trained)
    return sum(1 for p in problems if normalise_text(p.question) in seen)


def gsm_record(p: GsmProblem) -> Record:
    return Record(
        id=p.id,
        source="gsm",
        pathway="reasoning",
        messages=[{"role": "user", "content": p.question}, {"role": "assistant", "content": p.solution}],
    )


# ---------------------------------------------------------------- narrative and mixed


def narrative_source(source: str, dataset: str | None = None) -> Path:
    """The narrative/mixed records to hold out from: ``source``, or (auto) what the run's curated dataset held
    out before curation (its manifest's ``heldout``), else data/seed, else the placeholder set."""
    if source != "auto":
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"narrative.source {path} does not exist (a JSONL[.gz] of chat records)")
        return path
    manifest = Path(dataset or "") / "manifest.json"
    held = json.loads(manifest.read_text()).get("heldout") if dataset and manifest.is_file() else None
    if held:
        name, entry = max(held.items(), key=lambda kv: kv[1]["held_out"])  # the largest held-out input
        log.info("narrative held-out set: %s's %d rows held out before curation", name, entry["held_out"])
        return Path(dataset) / entry["path"]
    return SEED_SET if SEED_SET.is_file() else PLACEHOLDER


def read_records(path: Path) -> list[Record]:
    return read_records_jsonl(path)


def heldout_records(
    source: str, trained: list[Record], n: int, min_heldout: int, seed: int = 0
) -> tuple[dict[str, list[Record]], dict]:
    """{'narrative': [...], 'mixed': [...]} held out from training, and where each came from."""
    path = narrative_source(str(source))
    trained_responses = {normalise_text(r.response) for r in trained}
    records = read_records(path)
    out, info = {}, {}
    for kind in ("narrative", "mixed"):
        fresh = [
            r
            for r in records
            if r.pathway == kind
            and r.response
            and normalise_text(r.response) not in trained_responses
            and (kind != "mixed" or r.spans)
        ]
        total = sum(1 for r in records if r.pathway == kind)
        if len(fresh) >= min_heldout:
            chosen, origin = fresh[:n], str(path)
        elif kind == "narrative":
            chosen = [
                Record(
                    id=f"eval-story-{i:03d}",
                    source="qwythos-eval",
                    pathway="narrative",
                    messages=[{"role": "user", "content": p}, {"role": "assistant", "content": t}],
                )
                for i, (p, t) in enumerate(texts.HELDOUT_STORIES)
            ][:n]
            origin = "embedded held-out stories (qwythos/eval/texts.py)"
        else:
            chosen = [Record(**d) for d in texts.mixed_samples(n, seed)]
            origin = "embedded story-with-a-sum samples (qwythos/eval/texts.py)"
        info[kind] = {
            "origin": origin,
            "n": len(chosen),
            "source_records": total,
            "source_held_out": len(fresh),
            "hash": digest([r.messages for r in chosen]),
        }
        out[kind] = chosen
    return out, info
