"""`qwythos train` as a typed function: config file + overrides (or a run folder's saved config) -> run."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, load_config
from .config import TrainConfig
from .loop import Selector, train


def train_from_files(
    config: Path | None,
    out: Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    rounds: int | None = None,
    selector: Selector | None = None,
) -> Path:
    """Resume uses the run folder's resolved config.yaml; a new run needs a config file (or overrides)."""
    overrides = list(overrides or [])
    if rounds is not None:
        overrides.append(f"rounds.count={rounds}")
    if resume:
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {out} has no config.yaml; it is not a run folder")
        if config is not None or overrides:
            raise ConfigError(
                "--resume continues with the run's saved config.yaml; drop CONFIG and overrides"
            )
        return train(load_config(TrainConfig, saved), Path(out), resume=True, selector=selector)
    return train(load_config(TrainConfig, config, overrides), Path(out), selector=selector)
