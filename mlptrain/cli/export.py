"""`mlptrain export RUN --format onnx|safetensors|golden`: a run's network for other tools."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mlptrain.cli.common import (RunsDir, a_path, fail, interrupted, json_text, out, plain,
                                 usage)
from mlptrain.errors import MlptrainError
from mlptrain.experiment.export import (DEFAULT_FILES, DEFAULT_OPSET, FORMATS, GOLDEN_BATCH,
                                        MIN_OPSET, Exported, classes_agree, export_run)
from mlptrain.runs import RunStore

ExportFormat = Enum("ExportFormat", {name: name for name in FORMATS}, type=str)


def export(
    run: str = typer.Argument(..., metavar="RUN", help="A run id, a unique prefix of one, a "
                                                      "run directory, or `latest`."),
    fmt: ExportFormat = typer.Option(..., "--format", "-f", case_sensitive=False,
                                     help="onnx: the network for onnxruntime (checked on the "
                                          "test set); safetensors: the weights; golden: "
                                          "reference arrays for a port."),
    out_path: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="PATH", parser=a_path, help="The file to write (default: "
        + ", ".join(f"{name} for {fmt}" for fmt, name in DEFAULT_FILES.items())
        + " in the run directory; golden also writes a .json beside it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the file(s) if they exist "
                               "(never a run's own files)."),
    opset: Optional[int] = typer.Option(None, "--opset", min=MIN_OPSET,
                                        help=f"ONNX opset (default {DEFAULT_OPSET})."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Samples in the golden "
                                        f"batch (default {GOLDEN_BATCH})."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Export a completed run's network as ONNX, safetensors, or golden test vectors.

    An ONNX file is run by onnxruntime on the run's whole test set and refused (exit 1, no file
    written) if any probability differs from mlptrain's by more than 1e-5 or any predicted class
    differs; a safetensors file is read back and compared byte for byte. An existing file is
    replaced only with --force, and a run's own files (weights.npz, summary.json, ...) never.
    Needs the export extra: pip install 'mlptrain\\[export]'.
    """
    if opset is not None and fmt.value != "onnx":
        usage("--opset applies to --format onnx")
    if batch is not None and fmt.value != "golden":
        usage("--batch applies to --format golden")
    try:
        exported = export_run(RunStore(runs_dir), run, fmt.value, out_path,
                              opset=opset or DEFAULT_OPSET, batch=batch or GOLDEN_BATCH,
                              force=force)
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    if as_json:
        print(json_text({"run_id": exported.run_id, "format": exported.format,
                         "files": [str(f) for f in exported.files], **exported.check}))
    else:
        plain(out, describe(exported))


def describe(e: Exported) -> str:
    """What was written and what was checked, for a person."""
    c, path = e.check, e.files[0]
    if e.format == "onnx":
        agree = classes_agree(c, "; ", f" of {c['samples']:,}")  # a classifier's only
        return (f"wrote {path} (opset {c['opset']}, {path.stat().st_size:,} bytes)\n"
                f"verified with {c['runtime']} on {c['samples']:,} test samples: max "
                f"|p_onnx - p_mlptrain| = {c['max_abs_difference']:.2e} (allowed "
                f"{c['tolerance']:g}){agree}")
    if e.format == "safetensors":
        return (f"wrote {path} ({c['tensors']} tensors, {c['bytes']:,} bytes of weights)\n"
                "read back: every tensor bit for bit and the metadata as written")
    return (f"wrote {path} ({c['arrays']} arrays in float64 for a batch of {c['batch']}, "
            f"mean loss {c['loss']:.6g})\nand {e.files[1]} (what each array is, its shape)")

