"""`mlptrain predict RUN INPUT...`: the top classes for images or arrays, with a preview."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.markup import escape

from mlptrain.cli.common import RUN_HELP, RunsDir, err, fail, find_run, json_text, out, plain
from mlptrain.errors import MlptrainError
from mlptrain.experiment.predict import predict as predict_inputs
from mlptrain.runs import RunStore

SHADES = " ░▒▓█"  # dark to light; each character stands for two rows of pixels
MAX_PREVIEW_SAMPLES = 5  # an array batch lists this many samples on a terminal (all with --json)


def predict(
    run: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    input_paths: List[Path] = typer.Argument(..., metavar="INPUT...", help="PNG/JPEG images, "
                                             ".npy/.npz arrays (one sample or a batch), .csv "
                                             "tables (a run trained on one), or "
                                             "folders of them."),
    top: int = typer.Option(3, "--top", "-k", min=1, metavar="K", help="How many classes to list."),
    invert: Optional[bool] = typer.Option(None, "--invert/--no-invert", help="Dark ink on "
                                          "light paper / light ink on dark (default: decided "
                                          "per image from its border)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Predict classes for your own inputs with a trained run's network."""
    try:
        store = RunStore(runs_dir)
        found = find_run(store, run, weights=True)
        result = predict_inputs(store, str(found.path), input_paths, invert)
    except MlptrainError as exc:
        fail(exc)
    if result.task == "regression":
        _print_values(result, as_json)
        return
    tops = result.top(top)
    if as_json:
        print(json_text({
            "run_id": result.run_id,
            "inputs": _inputs_json(result),
            "predictions": [[{"class": c, "probability": p,
                              **({"name": result.name(c)} if result.class_names else {})}
                             for c, p in sample] for sample in tops],
            "warnings": result.warnings}))
        return
    single = len(result.inputs) == 1
    if single:
        for note in result.inputs[0].notes:
            plain(err, note)
        if result.inputs[0].kind == "image" and result.inputs[0].image is not None:
            out.print(preview(result.inputs[0].image), highlight=False)
    shown = 0
    for (inputs, index), sample, warnings in zip(result.sources(), tops, result.warnings):
        if single and len(tops) > MAX_PREVIEW_SAMPLES and shown == MAX_PREVIEW_SAMPLES:
            out.print(f"... {len(tops) - MAX_PREVIEW_SAMPLES} more samples (all with --json)")
            break
        shown += 1
        label = (f"sample {index}: " if single and len(tops) > 1 else
                 "" if single else f"{escape(inputs.path.name)}"
                 f"{f'[{index}]' if len(inputs.X) > 1 else ''}: ")
        best, p = sample[0]
        out.print(f"{label}[bold]{escape(result.name(best))}[/bold] ({100 * p:.1f}%)   "
                  + "  ".join(f"{escape(result.name(c))}: {100 * q:.1f}%"
                              for c, q in sample[1:]), highlight=False)
        for warning in warnings:
            out.print(f"  [yellow]warning: {escape(warning)}[/yellow]", highlight=False,
                      soft_wrap=True)


def _inputs_json(result) -> list[dict]:
    return [{"input": str(i.path), "kind": i.kind, "notes": i.notes, "samples": len(i.X)}
            for i in result.inputs]


def _print_values(result, as_json: bool) -> None:
    """A regression's predictions: one value per sample, in the target's units."""
    values = result.values()
    if as_json:
        print(json_text({
            "run_id": result.run_id,
            "inputs": _inputs_json(result),
            "predictions": [{"value": v} for v in values], "warnings": result.warnings}))
        return
    single = len(result.inputs) == 1
    for note in result.inputs[0].notes if single else ():
        plain(err, note)
    for (inputs, index), value, warnings in zip(result.sources(), values, result.warnings):
        label = f"{index}" if single else f"{escape(inputs.path.name)}[{index}]"
        out.print(f"{label}: [bold]{value:.6g}[/bold]", highlight=False)
        for warning in warnings:
            out.print(f"  [yellow]warning: {escape(warning)}[/yellow]", highlight=False,
                      soft_wrap=True)


def preview(pixels: np.ndarray) -> str:
    """The image as text, two pixel rows per line so it keeps its aspect ratio."""
    if pixels.shape[0] % 2:
        pixels = np.vstack([pixels, np.zeros((1, pixels.shape[1]))])
    pairs = (pixels[0::2] + pixels[1::2]) / 2  # (H/2, W)
    levels = np.clip(np.rint(pairs * (len(SHADES) - 1)), 0, len(SHADES) - 1).astype(int)
    return "\n".join("".join(SHADES[v] for v in row) for row in levels)
