"""A real `qwythos serve` subprocess on loopback for integration tests, and the tiny model it serves."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import make_tiny_base, randomise
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model, save_model

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}  # the headers every request to the test server needs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model_dir(root: Path, context: int = 512) -> Path:
    """A saved pathway model on a 4-layer random base: fast enough to serve many requests in a test."""
    base = make_tiny_base(
        root / "base",
        num_hidden_layers=4,
        hidden_size=128,
        intermediate_size=256,
        max_position_embeddings=context,
    )
    model, folder = build_model(base, PathwayConfig(rank=4))
    return save_model(randomise(model, seed=2), root / "tiny", base_source=str(base), base_folder=folder)


class Server:
    def __init__(self, model_dir: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_name = model_dir.resolve().name  # what `qwythos serve` calls it without --model-name
        env = {**os.environ, "QWYTHOS_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qwythos.cli", "serve", str(model_dir), "--port", str(self.port), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                break
        raise RuntimeError("server did not start:\n" + self.stop())

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", headers=AUTH).text
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        return out
