"""The recipes learners run, as cases of benchmarks/cpu.py: configs/mnist.toml and
configs/mnist-best.toml for a few epochs, by mlptrain (the real `mlptrain fit`) and by PyTorch
and JAX running the same recipe on the same CPU.

The same recipe means: the config's network, loss, optimizer, schedule (stretched over the
benchmark's epochs, as `--set train.epochs=N` stretches mlptrain's), batch size and training
aids, on 54,000 training and 6,000 validation images (mlptrain's split sizes; which images
does not change the work), every batch including the last partial one, and an evaluation of
the validation images at the end of every epoch, which mlptrain's epoch time includes.
Seconds per epoch are wall time from the start of the epoch's first step to the end of its
validation.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_VAL, N_IN, N_OUT = 54000, 6000, 784, 10

# what each recipe is, for the peers (read from the config files, which mlptrain runs as is)
RECIPES = {
    "mnist": dict(config="configs/mnist.toml", hidden=[512], batch=128, lr=0.1, momentum=0.9,
                  warmup_epochs=0.0, dropout=(0.0, 0.0), max_norm=0.0, smoothing=0.0,
                  augment=None),
    "mnist-best": dict(config="configs/mnist-best.toml", hidden=[1024, 1024], batch=128,
                       lr=0.1, momentum=0.9, warmup_epochs=2.0, dropout=(0.1, 0.3),
                       max_norm=3.5, smoothing=0.1,
                       augment=dict(shift=2, rotate=8.0, scale=0.08, shear=8.0)),
}


def is_recipe(case: str) -> bool:
    return case in RECIPES


def flops_per_epoch(case: str) -> float:
    """Training (forward + backward, no input gradient) plus the validation forward."""
    sizes = [N_IN, *RECIPES[case]["hidden"], N_OUT]
    pairs = list(zip(sizes, sizes[1:]))
    forward = 2 * sum(a * b for a, b in pairs)
    backward = 2 * pairs[0][0] * pairs[0][1] + 4 * sum(a * b for a, b in pairs[1:])
    return N_TRAIN * (forward + backward) + N_VAL * forward


def lr_at(r: dict, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The config's schedule: linear warmup, then cosine from lr down to 0 (optim.py)."""
    warm = round(r["warmup_epochs"] * steps_per_epoch)
    if step < warm:
        return r["lr"] * (step + 1) / warm
    last = max(epochs * steps_per_epoch - warm - 1, 1)
    return r["lr"] * 0.5 * (1 + math.cos(math.pi * min((step - warm) / last, 1.0)))


def load_split():
    """MNIST's first 54,000 training images for training, the last 6,000 for validation."""
    sys.path.append(str(REPO))
    from mlptrain.data import default_mnist_dir
    from mlptrain.data.mnist import load_mnist

    m = load_mnist(default_mnist_dir())
    X = np.ascontiguousarray(m.train_images.reshape(len(m.train_labels), -1), np.float32)
    y = m.train_labels.astype(np.int64)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


# -- mlptrain: the real command --------------------------------------------------------------


def run_mlptrain(case: str, epochs: int):
    r = RECIPES[case]
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "mlptrain", "fit", r["config"], "--set",
               f"train.epochs={epochs}", "--runs-dir", runs, "--quiet", "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        if proc.returncode:
            raise RuntimeError((proc.stderr.strip().splitlines() or ["fit failed"])[-1])
        run_dir = next(Path(runs).iterdir())
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
                   .splitlines() if line.strip()]
    times = [rec["seconds"] for rec in records if "seconds" in rec]
    return times, records[-1].get("val_accuracy")


# -- PyTorch ----------------------------------------------------------------------------------


def run_torch(case: str, epochs: int):
    import torch
    import torch.nn.functional as F

    r = RECIPES[case]
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    Xtr, ytr, Xva, yva = (torch.from_numpy(a) for a in load_split())
    layers, sizes = [], [N_IN, *r["hidden"], N_OUT]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Dropout(r["dropout"][min(i, 1)]))
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    hidden_weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)][:-1]
    opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"],
                          nesterov=True)
    batch, steps = r["batch"], math.ceil(N_TRAIN / r["batch"])
    aug = r["augment"]
    times, step, acc = [], 0, None
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(N_TRAIN)
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            xb = Xtr[idx]
            if aug:
                xb = _torch_augment(torch, F, xb, aug)
            for group in opt.param_groups:
                group["lr"] = lr_at(r, step, steps, epochs)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=r["smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if r["max_norm"]:
                with torch.no_grad():  # each hidden unit's incoming weights: norm <= c
                    for w in hidden_weights:
                        w.mul_(torch.clamp(r["max_norm"] / w.norm(dim=1, keepdim=True),
                                           max=1.0))
            step += 1
        model.eval()
        with torch.no_grad():
            acc = float((model(Xva).argmax(1) == yva).float().mean())
        times.append(time.perf_counter() - start)
    return times, acc


def _torch_augment(torch, F, xb, aug):
    """A fresh random shift, rotation, zoom and shear per image: affine_grid + grid_sample."""
    n = xb.shape[0]
    u = lambda limit: (torch.rand(n) * 2 - 1) * limit  # noqa: E731
    theta, zoom, shear = u(math.radians(aug["rotate"])), 1 + u(aug["scale"]), \
        torch.tan(u(math.radians(aug["shear"])))
    shift = torch.randint(-aug["shift"], aug["shift"] + 1, (n, 2)).float() * (2 / 28)
    cos, sin = torch.cos(theta) * zoom, torch.sin(theta) * zoom
    mat = torch.stack([torch.stack([cos, cos * shear - sin, shift[:, 0]], 1),
                       torch.stack([sin, sin * shear + cos, shift[:, 1]], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(mat, (n, 1, 28, 28), align_corners=False)
    return F.grid_sample(xb.view(n, 1, 28, 28), grid, align_corners=False).view(n, -1)


# -- JAX (the plain recipe only: its aids would need a second augmentation pipeline) ----------


def run_jax(case: str, epochs: int):
    import jax
    import jax.numpy as jnp

    r = RECIPES[case]
    if r["augment"] or any(r["dropout"]) or r["max_norm"] or r["smoothing"]:
        raise NotImplementedError("JAX runs the plain recipe only")
    Xtr, ytr, Xva, yva = load_split()
    sizes = [N_IN, *r["hidden"], N_OUT]
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    params = [(jax.random.uniform(k, (a, b), jnp.float32, -1, 1) * (6 / a) ** 0.5,
               jnp.zeros(b, jnp.float32)) for k, (a, b) in zip(keys, zip(sizes, sizes[1:]))]
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    mu = r["momentum"]

    def logits_of(p, xb):
        for w, b in p[:-1]:
            xb = jax.nn.relu(xb @ w + b)
        return xb @ p[-1][0] + p[-1][1]

    def loss(p, xb, yb):
        lp = jax.nn.log_softmax(logits_of(p, xb))
        return -jnp.mean(jnp.take_along_axis(lp, yb[:, None], 1))

    def step(carry, batch_and_lr):  # SGD with Nesterov momentum, as torch.optim.SGD
        (p, v), (idx, lr) = carry, batch_and_lr
        g = jax.grad(loss)(p, X[idx], Y[idx])
        v = jax.tree_util.tree_map(lambda a, b: mu * a + b, v, g)
        p = jax.tree_util.tree_map(lambda a, b, c: a - lr * (b + mu * c), p, g, v)
        return (p, v), None

    X, Y = jnp.asarray(Xtr), jnp.asarray(ytr)
    epoch_scan = jax.jit(lambda c, idx, lrs: jax.lax.scan(step, c, (idx, lrs))[0])
    one_step = jax.jit(lambda c, idx, lr: step(c, (idx, lr))[0])
    accuracy = jax.jit(lambda p, xv, yv: jnp.mean(jnp.argmax(logits_of(p, xv), 1) == yv))
    batch, steps = r["batch"], math.ceil(N_TRAIN / r["batch"])
    full = N_TRAIN // batch
    rng, carry, times, done, acc = np.random.default_rng(1), (params, velocity), [], 0, None
    Xv, Yv = jnp.asarray(Xva), jnp.asarray(yva)
    for _ in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(N_TRAIN)
        lrs = np.array([lr_at(r, done + s, steps, epochs) for s in range(steps)], np.float32)
        carry = epoch_scan(carry, jnp.asarray(order[:full * batch].reshape(full, batch)),
                           jnp.asarray(lrs[:full]))
        if steps > full:  # the last, partial batch
            carry = one_step(carry, jnp.asarray(order[full * batch:]), lrs[full])
        acc = float(accuracy(carry[0], Xv, Yv))  # a sync point, like the others' evaluation
        times.append(time.perf_counter() - start)
        done += steps
    return times, acc


CONTENDERS = {"mlptrain": run_mlptrain, "torch": run_torch, "jax_scan": run_jax}
