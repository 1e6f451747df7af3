"""Every training aid inside the CUDA epoch graph: the same random numbers as the NumPy backend
(Philox bit for bit), each augmentation kernel against augment.py, float64 training with every
aid on against the CPU to 1e-9, a byte-identical resume from a mid-epoch checkpoint, and the
graph path for each shipped config.

Marked `gpu`: skipped where CuPy or a GPU is missing (CI), run on the device machine.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import CONFIGS

from mlptrain.config import load_config, parse_config
from mlptrain.data.augment import Augmenter
from mlptrain.experiment import fit_experiment, plan, resume_experiment
from mlptrain.loop import EpochStarted, StopFlag
from mlptrain.runs import RunStore
from mlptrain.seeding import philox

from gpu_common import GPU_MARKS, cp, rel  # skips this module without CuPy
pytestmark = GPU_MARKS

from mlptrain.backend.cuda.epoch import EpochGraph  # noqa: E402
from mlptrain.backend.cuda.gemm import NULL, candidates  # noqa: E402
from mlptrain.backend.cupy_backend import CupyBackend  # noqa: E402
from mlptrain.backend.numpy_backend import NumpyBackend  # noqa: E402


@pytest.fixture(scope="module")
def gpu():
    return CupyBackend(graph=False, gemm="own")


def test_philox_kernel_gives_the_numpy_bits(gpu):
    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(4, 10_000), dtype=np.uint64).astype(np.uint32)
    counters[:, 0] = [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]  # a Random123 answer
    key = (0xA4093822, 0x299F31D0)
    out = cp.empty((4, 10_000), dtype=np.uint32)
    gpu.function("philox_kat")((40,), (256,), (cp.asarray(counters), np.uint32(key[0]),
                                               np.uint32(key[1]), out, np.int32(10_000)))
    assert np.array_equal(out.get(), philox(counters, key))
    assert [int(w) for w in out.get()[:, 0]] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks_are_identical_on_both_backends(gpu, dtype):
    cpu = NumpyBackend()
    for rows, cols, slot, step, rate in ((128, 784, 0, 0, 0.1), (37, 1023, 2, 2**33 + 5, 0.5)):
        want = np.empty((rows, cols), dtype)
        cpu.dropout_mask(11, slot, step, rate, out=want)
        got = gpu.dropout_mask(11, slot, step, rate, out=cp.empty((rows, cols), dtype))
        assert np.array_equal(got.get(), want)


KINDS = {"shift": dict(shift=2), "rotate": dict(rotate=15.0), "scale": dict(scale=0.15),
         "shear": dict(shear=12.0), "elastic": dict(elastic=34.0, elastic_sigma=4.0),
         "all": dict(shift=2, rotate=8.0, scale=0.08, shear=8.0, elastic=8.0),
         # Ciresan et al. (2010)'s refinements: per-class limits, per-axis zoom, per-image
         # elastic strength and width
         "narrow": dict(rotate=15.0, shear=15.0, narrow_classes=(1, 7), narrow_factor=0.5),
         "scale_xy": dict(scale_x=0.15, scale_y=0.2), "scale_x": dict(scale_x=0.15),
         "alpha_range": dict(elastic=(30.0, 38.0), elastic_sigma=4.0),
         "sigma_range": dict(elastic=34.0, elastic_sigma=(4.0, 6.0)),
         "paper": dict(shift=1, rotate=15.0, shear=15.0, narrow_classes=(1, 7), scale_x=0.15,
                       scale_y=0.2, elastic=(36.0, 38.0), elastic_sigma=(5.0, 6.0))}


def span(value):
    """(lo, hi - lo) of a range, (x, 0) of a number: the kernels' arguments."""
    return (value[0], value[1] - value[0]) if isinstance(value, tuple) else (value, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_augment_kernels_match_augment_py_in_float64(gpu, kind):
    from mlptrain.data.augment import gaussian_blur_matrix

    H = W = 28
    spec = KINDS[kind]
    rng = np.random.default_rng(3)
    X = rng.random((300, H * W))
    index = rng.permutation(300)[:96]
    labels = rng.integers(0, 10, 300)
    step, seed = 12345, 7
    want = Augmenter((H, W), seed, **spec)(X[index].copy(), step, labels[index])
    dX, out = cp.asarray(X), cp.zeros((96, H * W))
    affine = any(spec.get(k) for k in ("rotate", "scale", "shear", "elastic", "scale_x",
                                       "scale_y"))
    field = NULL
    (alpha, alpha_span), (sigma, sigma_span) = (span(spec.get(k, d)) for k, d in
                                                (("elastic", 0.0), ("elastic_sigma", 4.0)))
    base = cp.asarray([step], dtype=np.int64)
    if spec.get("elastic"):
        field = cp.zeros((96, 2, H * W))
        gpu.kernel("elastic_field", np.float64)(
            (96, 2), (256,), (field, np.int32(H), np.int32(W),
                              cp.asarray(gaussian_blur_matrix(H, sigma, np.float64)),
                              cp.asarray(gaussian_blur_matrix(W, sigma, np.float64)),
                              np.float64(alpha), np.float64(alpha_span), np.float64(sigma),
                              np.float64(sigma_span), np.uint32(seed), base, np.int32(0)))
    per_axis = bool(spec.get("scale_x") or spec.get("scale_y"))
    narrow = sum(1 << c for c in spec.get("narrow_classes", ()))
    gpu.kernel("augment", np.float64)(
        (96,), (256,), (dX, cp.asarray(index, dtype=np.int64), out, np.int32(H), np.int32(W),
                        np.int32(spec.get("shift", 0)), np.float64(math.radians(spec.get("rotate", 0))),
                        np.float64(spec.get("scale_y", 0) if per_axis else spec.get("scale", 0)),
                        np.float64(math.radians(spec.get("shear", 0))),
                        np.float64(spec.get("scale_x", 0)), np.int32(per_axis),
                        cp.asarray(labels, dtype=np.int64) if narrow else NULL,
                        np.uint32(narrow), np.float64(spec.get("narrow_factor", 0.5)),
                        np.int32(affine), field, np.uint32(seed), base, np.int32(0)))
    assert rel(out.get(), want) < 1e-9
    assert not np.allclose(want, X[index])  # it did distort


MNIST_SMALL = """
name = "gpu-aids"
[data]
dataset = "mnist"
val_fraction = 0.1
limit = 3000
[model]
hidden = [64, 32]
activation = "relu"
init = "he_uniform"
dropout_input = 0.1
dropout_hidden = 0.3
max_norm = 1.0
label_smoothing = 0.1
[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
nesterov = true
[schedule]
name = "onecycle"
momentum_low = 0.85
warmup_epochs = 0.5
[train]
batch_size = 128
epochs = 2
checkpoint_every = 7
dtype = "float64"
"""
AUGMENTS = {"affine": ["data.augment_shift=2", "data.augment_rotate=8",
                       "data.augment_scale=0.08", "data.augment_shear=8"],
            "elastic": ["data.augment_elastic=8", "data.augment_elastic_sigma=4"],
            "ciresan": ["data.augment_rotate=15", "data.augment_shear=15",
                        "data.augment_narrow_classes=[1, 7]", "data.augment_scale_x=0.15",
                        "data.augment_scale_y=0.2", "data.augment_elastic=[8, 10]",
                        "data.augment_elastic_sigma=[4, 5]"]}


def run_aids(runs_dir, device, overrides, stop=None, **kw):
    config = parse_config(MNIST_SMALL, overrides=[f"train.device={device}", *overrides])
    return fit_experiment(config, RunStore(runs_dir), stop=stop, **kw)


def metrics(run):
    return [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("augment", AUGMENTS)
def test_every_aid_in_the_graph_matches_numpy_to_1e_9_in_float64(runs_dir, augment):
    cpu = run_aids(runs_dir, "cpu", AUGMENTS[augment])
    gpu_run = run_aids(runs_dir, "cuda", AUGMENTS[augment])
    assert gpu_run.summary["path"] == "cuda graph"
    for mine, ref in zip(metrics(gpu_run), metrics(cpu), strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-9), (mine["epoch"], key)
    want, got = (dict(np.load(r.path / "weights.npz")) for r in (cpu, gpu_run))
    for name, w in want.items():
        assert rel(got[name], w) < 1e-9, name


def test_resume_from_a_mid_epoch_checkpoint_is_byte_identical_on_the_gpu(runs_dir, monkeypatch):
    monkeypatch.setenv("MLPTRAIN_CUDA_TUNE", "0")  # the same products in both processes' plans
    whole = run_aids(runs_dir, "cuda", AUGMENTS["affine"])
    stop = StopFlag()
    stopped = run_aids(runs_dir, "cuda", AUGMENTS["affine"], stop=stop,
                       on_event=lambda e: isinstance(e, EpochStarted) and e.epoch == 2 and stop.set())
    assert stopped.summary["status"] == "interrupted"
    checkpoint = np.load(stopped.path / "checkpoint.npz")
    steps = math.ceil(int(checkpoint["order"].size) / 128)
    assert int(checkpoint["position"]) == 7 - steps % 7  # epoch 2's first checkpoint
    done = resume_experiment(RunStore(runs_dir), stopped.path.name)
    assert (done.path / "weights.npz").read_bytes() == (whole.path / "weights.npz").read_bytes()


def test_a_resume_keeps_the_timed_plans_of_the_run_it_continues(runs_dir, monkeypatch):
    """With timing on, each process picks its products' tiles and splits anew, and a split
    changes the order of a sum. The checkpoint keeps the stopped run's picks; the resume must
    use them. Timing is replaced by seeded random picks, so the stopped run and the whole run
    pick alike and a resume that picked again would pick otherwise."""
    picker = {}

    def pick(self, m, n, k, launch):
        options = candidates(m, n, k)
        return options[picker["rng"].integers(len(options))]

    monkeypatch.setattr(EpochGraph, "_fastest", pick)
    monkeypatch.setenv("MLPTRAIN_CUDA_TUNE", "1")
    runs = {}
    for name, seed in (("whole", 1), ("stopped", 1), ("other picks", 2)):
        picker["rng"] = np.random.default_rng(seed)
        stop = StopFlag() if name == "stopped" else None
        runs[name] = run_aids(runs_dir, "cuda", AUGMENTS["affine"], stop=stop,
                              on_event=lambda e, stop=stop: stop and isinstance(e, EpochStarted)
                              and e.epoch == 2 and stop.set())
    assert runs["stopped"].summary["status"] == "interrupted"
    recorded = json.loads(str(np.load(runs["stopped"].path / "checkpoint.npz")["product_plans"]))
    assert {r["product"] for r in recorded} >= {"forward 0", "weight grad 0", "input grad 1"}
    picker["rng"] = np.random.default_rng(2)  # what a resume that timed again would pick
    done = resume_experiment(RunStore(runs_dir), runs["stopped"].path.name)
    weights = {name: (run.path / "weights.npz").read_bytes()
               for name, run in (*runs.items(), ("resumed", done))}
    assert weights["other picks"] != weights["whole"]  # the picks matter to the last bit
    assert weights["resumed"] == weights["whole"]


@pytest.mark.parametrize("name", ["mnist.toml", "mnist-best.toml", "xor.toml",
                                  "mnist-capacity.toml", "mnist-deep.toml"])
def test_every_shipped_config_takes_the_graph(name):
    config = load_config(CONFIGS / name, overrides=["train.device=cuda"])
    assert plan(config).path == "cuda graph"
