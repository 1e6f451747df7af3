"""`mlptrain eval RUN`: re-score a saved run's weights on one split of its data."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mlptrain.cli.common import RunsDir, fail, interrupted, out
from mlptrain.errors import MlptrainError
from mlptrain.experiment import evaluate_run
from mlptrain.runs import RunStore


class EvalSplit(str, Enum):
    test = "test"
    val = "val"
    train = "train"


def eval_(
    run: str = typer.Argument("latest", help="A run id, a unique prefix of one, a run "
                                             "directory, or `latest`."),
    split: EvalSplit = typer.Option(EvalSplit.test, "--split", case_sensitive=False,
                                    help="Which split to evaluate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Evaluate a saved run's weights on its test split (or --split val|train)."""
    from mlptrain.cli.render import eval_table

    try:
        result = evaluate_run(RunStore(runs_dir), run, split.value)
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    if as_json:
        print(json.dumps(result))
    else:
        out.print(eval_table(result))
