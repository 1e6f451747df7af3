"""`mlptrain predict RUN INPUT`: the top classes for an image or an array, with a preview."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from mlptrain.cli.common import RunsDir, err, fail, out
from mlptrain.errors import MlptrainError
from mlptrain.experiment.predict import predict as predict_input
from mlptrain.runs import RunStore

SHADES = " ░▒▓█"  # dark to light; each character stands for two rows of pixels
MAX_PREVIEW_SAMPLES = 5  # a batch lists this many samples on a terminal (all with --json)


def predict(
    run: str = typer.Argument(..., help="A run id, unique prefix, directory or `latest`."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A PNG/JPEG image, or a "
                                      ".npy/.npz array of one sample or a batch."),
    top: int = typer.Option(3, "--top", "-k", min=1, help="How many classes to list."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Predict classes for your own input with a trained run's network."""
    try:
        result = predict_input(RunStore(runs_dir), run, input_path)
    except MlptrainError as exc:
        fail(exc)
    tops, inputs = result.top(top), result.inputs
    if as_json:
        print(json.dumps({
            "run_id": result.run_id, "input": str(input_path), "kind": inputs.kind,
            "notes": inputs.notes, "predictions": [
                [{"class": c, "probability": p} for c, p in sample] for sample in tops]}))
        return
    for note in inputs.notes:
        err.print(f"{note}", highlight=False, soft_wrap=True)
    if inputs.kind == "image" and inputs.image is not None:
        out.print(preview(inputs.image), highlight=False)
    for i, sample in enumerate(tops[:MAX_PREVIEW_SAMPLES]):
        label = f"sample {i}: " if len(tops) > 1 else ""
        best, p = sample[0]
        out.print(f"{label}[bold]{best}[/bold] ({100 * p:.1f}%)   " + "  ".join(
            f"{c}: {100 * q:.1f}%" for c, q in sample[1:]), highlight=False)
    if len(tops) > MAX_PREVIEW_SAMPLES:
        out.print(f"... {len(tops) - MAX_PREVIEW_SAMPLES} more samples (all with --json)")


def preview(pixels: np.ndarray) -> str:
    """The image as text, two pixel rows per line so it keeps its aspect ratio."""
    if pixels.shape[0] % 2:
        pixels = np.vstack([pixels, np.zeros((1, pixels.shape[1]))])
    pairs = (pixels[0::2] + pixels[1::2]) / 2  # (H/2, W)
    levels = np.clip(np.rint(pairs * (len(SHADES) - 1)), 0, len(SHADES) - 1).astype(int)
    return "\n".join("".join(SHADES[v] for v in row) for row in levels)
