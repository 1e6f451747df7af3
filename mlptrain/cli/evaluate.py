"""`mlptrain eval RUN`: re-score a saved run's weights on one split of its data, or on a file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mlptrain.cli.common import (
    RUN_HELP,
    RunsDir,
    a_path,
    err,
    fail,
    find_run,
    interrupted,
    json_text,
    out,
    plain,
    usage,
)
from mlptrain.errors import MlptrainError
from mlptrain.experiment import evaluate_run
from mlptrain.runs import RunStore


class EvalSplit(str, Enum):
    test = "test"
    val = "val"
    train = "train"


def eval_(
    run: str = typer.Argument("latest", metavar="RUN", help=RUN_HELP),
    split: Optional[EvalSplit] = typer.Option(None, "--split", case_sensitive=False,
                                              help="Which split of the run's data to score "
                                                   "(default: test)."),
    data: Optional[Path] = typer.Option(None, "--data", metavar="FILE", parser=a_path,
                                        help="Score the arrays X and y of this .npz file "
                                             "instead of the run's own data."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Score a saved run's weights on its test split, with precision, recall and F1 per class.

    --split scores another split of the run's data; --data FILE.npz scores the arrays X and y
    of a file of yours.
    """
    from mlptrain.cli.render import eval_report

    if split is not None and data is not None:
        usage("--split picks a split of the run's own data; --data scores a file instead "
              "(give one of them)")
    try:
        found = find_run(RunStore(runs_dir), run, weights=True)
        result = evaluate_run(RunStore(runs_dir), str(found.path),
                              (split or EvalSplit.test).value, data)
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    for note in result["notes"]:
        plain(err, note)
    if as_json:
        print(json_text(result))
    else:
        out.print(eval_report(result))
