"""File helpers every stage shares: content hashes of files and folders, atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 22


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """Hex sha256 over several files: each file's name and bytes, in name order (a folder's identity)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def model_files(folder: Path) -> list[Path]:
    """What makes a model folder the model it is: its JSON (config, tokenizer, the verified base reference)
    and its safetensors (pathways, or every weight of an exported Mixtral)."""
    return [p for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")]


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write to a temp file beside path, fsync, rename into place: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
