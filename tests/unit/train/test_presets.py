"""Every shipped training preset parses into the typed config (unknown keys would be errors)."""

from pathlib import Path

import pytest

from qwythos.config import load_config
from qwythos.train.config import TrainConfig

PRESETS = sorted(
    p
    for p in (Path(__file__).parents[3] / "configs").glob("*.yaml")
    if not p.name.startswith(("curate", "synth"))
)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_loads(path):
    cfg = load_config(TrainConfig, path, ["data.dataset=/tmp/x"])
    assert cfg.stages and cfg.data.dataset == "/tmp/x"


def test_all_presets_found():
    assert {p.name for p in PRESETS} >= {"quickstart.yaml", "smollm2-135m.yaml", "gpu-1b.yaml", "gpu-8b.yaml"}
