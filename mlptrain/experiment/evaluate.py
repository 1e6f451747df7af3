"""Re-scoring a saved run: its weights on one split of its own data."""

from __future__ import annotations

from typing import Any

from mlptrain import train as loop
from mlptrain.errors import ConfigError
from mlptrain.experiment.setup import SPLITS, prepare_run
from mlptrain.runs import RunStore


def evaluate_run(store: RunStore, ref: str, split: str = "test") -> dict[str, Any]:
    """Re-evaluates a saved run's weights on one split of its own data."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}.")
    run = store.find(ref)
    p = prepare_run(run)
    data = loop.to_device(p.model.ops, p.model, *p.dataset.split(split))
    if not data.size:
        raise ConfigError(f"run {run.run_id} has an empty {split} split (val_fraction = 0?).")
    loss, accuracy = loop.evaluate(p.model, data, p.config.train.eval_batch_size)
    return {"run_id": run.run_id, "split": split, "loss": loss, "accuracy": accuracy,
            "samples": data.size}
