"""The B = 64 step's parts timed apart (session7-2026-12-08.md): python step_parts.py BATCH THREADS."""
import numpy as np, time, sys
from threadpoolctl import threadpool_limits
from mlptrain.backend import get_backend
from mlptrain.config import Config
from mlptrain.model import build_model
from mlptrain.optim import build_optimizer
from mlptrain.step import build_step
from mlptrain import loop
B = int(sys.argv[1]); TH = int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.random((60000, 784)).astype(np.float32); y = rng.integers(0, 10, 60000)
cfg = Config(); cfg.model.hidden = [128]; cfg.model.init = "he_uniform"; cfg.optimizer.lr = 0.01; cfg.train.batch_size = B
ops = get_backend("cpu"); step = build_step(cfg, (784,), 10, 60000)
model = build_model(step, [128], ops, 784); model.initialize("he_uniform", rng)
opt = build_optimizer(step.optimizer, ops, model.params)
eager = loop.EagerStep(step, model, opt)
train = loop.to_device(ops, model, X, y)
ws = model.workspace(B); tb = np.empty(B, train.targets.dtype)
idx = rng.permutation(60000)
sums = np.zeros((1, 2))
def t(f, n=3000):
    for i in range(100): f(i)
    best = 1e9
    for r in range(3):
        s = time.perf_counter()
        for i in range(n): f(i)
        best = min(best, (time.perf_counter() - s) / n)
    return best * 1e6
with threadpool_limits(TH):
    g = lambda i: (ops.take_rows(train.X, idx[(i % 900) * B:(i % 900 + 1) * B], out=ws.x), ops.take_rows(train.targets, idx[(i % 900) * B:(i % 900 + 1) * B], out=tb))
    print("gather", round(t(g), 1))
    print("forward", round(t(lambda i: model.forward(ws, training=True)), 1))
    logits = model.forward(ws)
    print("loss_and_grad(loss only)", round(t(lambda i: ops.loss_and_grad(model.loss, ws.acts[-1], tb, ws.loss_cache, 1.0 / B, ws.dlogits, sums, None)), 1))
    print("backward folded", round(t(lambda i: model.backward(ws, 1e-9)), 1))
    print("backward grads", round(t(lambda i: model.backward(ws)), 1))
    print("opt step", round(t(lambda i: opt.step(model.params, model.grads, 1e-9)), 1))
    print("whole eager step", round(t(lambda i: (g(i), eager(ws, tb, i, 1e-9, sums))), 1))
    W = model.layers[0].weight
    print("x@W1 alone", round(t(lambda i: np.matmul(ws.x, W.T, out=ws.acts[1])), 1))
