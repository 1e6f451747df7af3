"""A shipped MNIST config's training step written in PyTorch, for benchmarks that put mlptrain
beside the best PyTorch we can write for the same network (gpu.py's recipe case,
time_to_accuracy.py).

The config is read by mlptrain itself (`prepare`): the same training split (the digits the
seed holds out stay out), the same widths, dropout rates, max-norm, label smoothing, SGD with
Nesterov momentum and weight decay, and the schedule's own rate for every step. Augmentation
runs on the GPU (grid_sample) with every distortion mlptrain has, drawn per image from the same
ranges (torch's own generator: the same distributions, not the same draws): shift, rotation,
zoom (per axis), shear, narrowed classes and elastic fields. He-uniform init from torch's own
generator.

Modes: "eager"; "graph", the whole step (augmentation, dropout, update) captured once as a CUDA
graph and replayed per batch (full batches only: the graph's batch is static, so an epoch's
last partial batch is left out); "compile", the step under torch.compile.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gpu import timed_epochs

ROOT = Path(__file__).resolve().parent.parent


def prepared(config: str | Path, overrides: list[str]):
    """mlptrain's own reading of the config: (Prepared, (X_train, y_train), (X_test, y_test))."""
    from mlptrain.config import load_config
    from mlptrain.experiment import prepare

    p = prepare(load_config(Path(config), overrides=overrides))
    return p, p.dataset.split("train"), p.dataset.split("test")


def _refuse_unsupported(step) -> None:
    if step.activation != "relu" or step.optimizer.kind.value != "sgd":
        raise NotImplementedError("the PyTorch recipe is written for ReLU and SGD only")


def train(config: str | Path, overrides: list[str] = (), mode: str = "graph",
          tf32: bool = False) -> dict:
    """Trains the config's network in PyTorch on the GPU (the CPU where there is none: a smoke
    test, eager or compiled); returns {"epochs": seconds of each
    epoch, "test_accuracy": after the last}."""
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    p, (Xtr, ytr), (Xte, yte) = prepared(config, list(overrides))
    step_cfg = p.step
    _refuse_unsupported(step_cfg)
    Xd = torch.from_numpy(np.array(Xtr, np.float32)).to(dev)
    yd = torch.from_numpy(ytr.astype(np.int64)).to(dev)
    batch, n, epochs = step_cfg.batch_size, len(Xtr), step_cfg.epochs
    steps = math.ceil(n / batch)
    torch.manual_seed(step_cfg.seed)
    sizes = p.model.sizes
    ws = [torch.empty(o, i, device=dev) for i, o in zip(sizes, sizes[1:])]
    bs = [torch.zeros(o, device=dev) for o in sizes[1:]]
    for w in ws:
        torch.nn.init.kaiming_uniform_(w, a=0.0, nonlinearity="relu")  # he_uniform
    params = [t.requires_grad_() for pair in zip(ws, bs) for t in pair]
    bufs = [torch.zeros_like(q) for q in params]
    lr_t = torch.zeros((), device=dev)
    o = step_cfg.optimizer
    mu, wd = o.momentum, o.weight_decay
    rates = step_cfg.dropout_rates(len(ws))  # (input, hidden, ...) of mlptrain's step
    limit, smoothing = step_cfg.max_norm, step_cfg.label_smoothing
    augment = _augmenter(step_cfg.augment, torch, F, dev)

    def step(index):
        x = Xd[index]
        if augment is not None:
            x = augment(x, yd[index])
        for i, w in enumerate(ws):
            if rates[i] > 0:
                x = F.dropout(x, rates[i])
            x = F.linear(x, w, bs[i])
            if i < len(ws) - 1:
                x = F.relu(x)
        loss = F.cross_entropy(x, yd[index], label_smoothing=smoothing)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for q, g, v in zip(params, grads, bufs):
                if wd:
                    g = g + wd * q
                v.mul_(mu).add_(g)
                q.sub_(lr_t * (g + mu * v) if o.nesterov else lr_t * v)
            for w in ws[:-1] if limit else ():  # each hidden unit's incoming weights
                w.mul_(limit / w.norm(dim=1, keepdim=True).clamp(min=limit))

    index = torch.zeros(batch, dtype=torch.int64, device=dev)
    run = step
    if mode == "compile":
        run = torch.compile(step)
    elif mode == "graph":
        run = _captured(step, index, params, bufs, torch)
    done = [0]
    full = n // batch if mode == "graph" else steps

    def epoch():
        order = torch.randperm(n, device=dev)
        for s in range(full):
            lr_t.fill_(step_cfg.schedule.lr(done[0]))
            done[0] += 1
            rows = order[s * batch:(s + 1) * batch]
            if mode == "graph":
                index.copy_(rows)
                run()
            else:
                run(rows)

    seconds = timed_epochs(epoch, sync, epochs)
    with torch.no_grad():
        x = torch.from_numpy(np.array(Xte, np.float32)).to(dev)  # a writable copy
        for i, w in enumerate(ws):
            x = F.linear(x, w, bs[i])
            x = F.relu(x) if i < len(ws) - 1 else x
        accuracy = float((x.argmax(1).cpu().numpy() == yte).mean())
    return {"epochs": seconds, "test_accuracy": accuracy}


def _captured(step, index, params, bufs, torch):
    """The step captured as one CUDA graph reading `index`; warmed up on a side stream (then
    the parameters and momentum are put back)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    saved = [q.detach().clone() for q in params]
    with torch.cuda.stream(side):
        for _ in range(3):
            step(index)
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for q, s0, v in zip(params, saved, bufs):
            q.copy_(s0)
            v.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(index)
    return graph.replay


def _augmenter(a, torch, F, dev):
    """(x (B, H*W), labels (B,)) -> the batch distorted as mlptrain's augmentation draws it
    (data/augment.py), per image: the source point of output pixel p is M (p - c) + c - t
    (+ an elastic field), M = rotation x per-axis zoom x horizontal shear, t a whole-pixel
    shift, each uniform in its range, rotation and shear narrowed for the narrowed classes;
    sampled bilinearly with zeros outside. None for no augmentation."""
    if a is None:
        return None
    from mlptrain.data.augment import value_range

    h, w = a.shape
    per_axis = bool(a.scale_x or a.scale_y)
    zoom = torch.tensor((a.scale_y, a.scale_x) if per_axis else (a.scale, a.scale), device=dev)
    narrow = torch.tensor(a.narrow_classes or (-1,), device=dev)
    alpha, sigma = value_range(a.elastic), value_range(a.elastic_sigma)
    dr, dc = torch.meshgrid(torch.arange(h, device=dev) - (h - 1) / 2,
                            torch.arange(w, device=dev) - (w - 1) / 2, indexing="ij")
    offsets = (torch.arange(h, device=dev)[:, None] - torch.arange(h, device=dev)).float()
    kernel = torch.arange(-3 * h, 3 * h + 1, device=dev).float()

    def within(lo_hi, B):
        lo, hi = lo_hi
        return (lo + (hi - lo) * torch.rand(B, device=dev))[:, None, None]

    def blur(s):  # (B, 1, 1) widths -> (B, h, h) Gaussian blurs that sum to one
        return torch.exp(-0.5 * (offsets / s) ** 2) / \
            torch.exp(-0.5 * (kernel / s.view(-1, 1)) ** 2).sum(1).view(-1, 1, 1)

    def distort(x, labels):
        B = x.shape[0]
        u = torch.rand(B, 4, device=dev) * 2 - 1
        f = torch.where(torch.isin(labels, narrow), a.narrow_factor, 1.0)
        th, ph = u[:, 0] * math.radians(a.rotate) * f, u[:, 1] * math.radians(a.shear) * f
        zr = 1 + zoom[0] * u[:, 2]
        zc = 1 + zoom[1] * u[:, 3] if per_axis else zr
        t = torch.randint(-a.shift, a.shift + 1, (B, 2), device=dev).float()
        c, s, tan = [v.view(B, 1, 1) for v in (torch.cos(th), torch.sin(th), torch.tan(ph))]
        zr, zc = zr.view(B, 1, 1), zc.view(B, 1, 1)
        rows = c * zr * dr + (c * zr * tan - s * zc) * dc + (h - 1) / 2 - t[:, :1, None]
        cols = s * zr * dr + (s * zr * tan + c * zc) * dc + (w - 1) / 2 - t[:, 1:, None]
        if alpha[1]:
            g, strength = blur(within(sigma, B)), within(alpha, B)
            field = lambda: strength * (g @ (torch.rand(B, h, w, device=dev) * 2 - 1)  # noqa: E731
                                        @ g.transpose(1, 2))
            rows, cols = rows + field(), cols + field()
        grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], -1)
        return F.grid_sample(x.view(B, 1, h, w), grid, align_corners=False).view(B, h * w)
    return distort
