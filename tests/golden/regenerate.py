"""Re-records the golden loss trajectory of a seeded XOR run. Run it only on purpose:

    python tests/golden/regenerate.py

and say in the commit why the numbers changed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment
from mlptrain.runs import RunStore

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent.parent / "configs" / "xor.toml"
OVERRIDES = ["train.epochs=30"]


def trajectory(runs_root: Path) -> dict:
    run = fit_experiment(load_config(CONFIG, OVERRIDES), RunStore(runs_root))
    metrics = [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "val_accuracy")}
               for r in (json.loads(line) for line in
                         (run.path / "metrics.jsonl").read_text().splitlines())]
    return {"config": "configs/xor.toml", "overrides": OVERRIDES, "epochs": metrics}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        data = trajectory(Path(tmp))
    (HERE / "xor_trajectory.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {HERE / 'xor_trajectory.json'}")
