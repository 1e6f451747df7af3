"""Microseconds per matrix product of the MNIST nets we train (784-H-10, batch B), each of
mlptrain's kernels at its fastest plan against cuBLAS: SIMT (fp32 units), 3xTF32 (tensor cores,
each K-tile's sum added in fp32: fp32-level error; gemm kind "tc3"), 3xTF32 summed on the
tensor cores alone ("tcsum", up to 10x the error), plain TF32 (train.precision = "tf32",
~1e-3).

Each kernel's time is the best of every (tile, K-split) candidate the epoch graph's tuner tries
(gemm.candidates), each timed as a CUDA graph of 20 launches, best of two passes; cuBLAS
(cp.matmul, fp32) and, where PyTorch is installed, torch.matmul with TF32 off and on, over 20
back-to-back calls. The products are those of one step: forward x W^T, the weight gradient
[x | 1]^T dz (its ones row gives the bias gradient) and the input gradient dz W.

    python benchmarks/gemm_tc.py [--hidden 128,1024,2048] [--batch 64,128,1024]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES, CLASSES, REPS = 784, 10, 20


def main(argv=None) -> None:
    import cupy as cp

    from mlptrain.backend.cuda import gemm as G
    from mlptrain.backend.cupy_backend import CupyBackend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="128,1024,2048")
    parser.add_argument("--batch", default="64,128,1024")
    parser.add_argument("--kernels", default="simt,3xtf32,3xtf32-tcsum,tf32")
    args = parser.parse_args(argv)
    kernels = {"simt": G.MMA_SIMT, "3xtf32": G.MMA_3XTF32_RN, "3xtf32-tcsum": G.MMA_3XTF32,
               "tf32": G.MMA_TF32}
    kernels = {k: v for k, v in kernels.items() if k in args.kernels.split(",")}
    gpu = CupyBackend(graph=False, gemm="own")
    gpu.prepare_kernels(G.kernel_names(np.float32, G.TILES, tuple(kernels.values())))
    try:
        import torch
    except ImportError:
        torch = None
    stream, start, stop = cp.cuda.Stream(non_blocking=True), cp.cuda.Event(), cp.cuda.Event()
    scratch = (cp.empty(G.MAX_PARTIALS, np.float32), cp.zeros(4096, np.int32))

    def timed(launch) -> float:
        """Microseconds per launch: REPS launches captured once, best of two replays."""
        with stream:
            stream.begin_capture()
            for _ in range(REPS):
                launch()
            graph = stream.end_capture()
            best = float("inf")
            for _ in range(3):
                start.record(stream)
                graph.launch(stream)
                stop.record(stream)
                stop.synchronize()
                best = min(best, cp.cuda.get_elapsed_time(start, stop))
        return best * 1e3 / REPS

    def eager(call) -> float:
        call()
        cp.cuda.Device().synchronize()
        best = float("inf")
        for _ in range(3):
            start.record()
            for _ in range(REPS):
                call()
            stop.record()
            stop.synchronize()
            best = min(best, cp.cuda.get_elapsed_time(start, stop))
        return best * 1e3 / REPS

    rng = np.random.default_rng(0)
    names = [*kernels, "cublas", *(("torch fp32", "torch tf32") if torch else ())]
    print("| net | product | m x n x k | " + " | ".join(names) + " | best kernel's plan |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in names) + " | --- |")
    totals = {}
    for hidden in map(int, args.hidden.split(",")):
        for batch in map(int, args.batch.split(",")):
            x = cp.asarray(rng.random((batch, FEATURES), dtype=np.float32))
            w0 = cp.asarray(rng.standard_normal((hidden, FEATURES), dtype=np.float32))
            w1 = cp.asarray(rng.standard_normal((CLASSES, hidden), dtype=np.float32))
            h = cp.asarray(rng.random((batch, hidden), dtype=np.float32))
            dz1 = cp.asarray(rng.standard_normal((batch, CLASSES), dtype=np.float32))
            dz0 = cp.asarray(rng.standard_normal((batch, hidden), dtype=np.float32))
            ones = cp.empty(max(hidden, FEATURES), np.float32)
            # (label, a, b, m, n, k, trans_a, trans_b, ones row)
            products = [
                (f"forward {FEATURES}->{hidden}", x, w0, batch, hidden, FEATURES, False, True, False),
                (f"forward {hidden}->{CLASSES}", h, w1, batch, CLASSES, hidden, False, True, False),
                (f"weight grad {FEATURES}x{hidden}", x, dz0, FEATURES, hidden, batch, True, False,
                 True),
                (f"weight grad {hidden}x{CLASSES}", h, dz1, hidden, CLASSES, batch, True, False,
                 True),
                (f"input grad {CLASSES}->{hidden}", dz1, w1, batch, hidden, CLASSES, False, False,
                 False)]
            for label, a, b, m, n, k, ta, tb, ones_row in products:
                out = cp.empty((m, n), np.float32)
                times, plans = {}, {}
                for name, mma in kernels.items():
                    best = (float("inf"), None)
                    for p in G.candidates(m + ones_row, n, k, (mma,)):
                        launch = lambda p=p: gpu.gemm(  # noqa: E731
                            a, b, out, m, n, k, a.shape[1], b.shape[1], ta, tb,
                            ones_out=ones if ones_row else None, ones_row=ones_row,
                            gemm_plan=p, scratch=scratch)
                        best = min(best, (timed(launch), p), key=lambda t: t[0])
                    times[name], plans[name] = best
                opa, opb = (a.T if ta else a), (b.T if tb else b)
                times["cublas"] = eager(lambda: cp.matmul(opa, opb, out=out))
                if torch:
                    ta_, tb_ = torch.as_tensor(opa, device="cuda"), torch.as_tensor(opb,
                                                                                   device="cuda")
                    for name, tf32 in (("torch fp32", False), ("torch tf32", True)):
                        torch.backends.cuda.matmul.allow_tf32 = tf32
                        times[name] = eager(lambda: torch.matmul(ta_, tb_))
                    torch.backends.cuda.matmul.allow_tf32 = False
                for name, t in times.items():
                    totals[name] = totals.get(name, 0.0) + t
                fastest = min(kernels, key=times.get)
                p = plans[fastest]
                print(f"| H={hidden} B={batch} | {label} | {m}x{n}x{k} | "
                      + " | ".join(f"{times[x]:.1f}" for x in names)
                      + f" | {fastest}: {p.tile}/{p.splits}{'i' * p.inline_reduce} |", flush=True)
    print("| all | sum | | " + " | ".join(f"{totals[x]:.1f}" for x in names) + " | |")


if __name__ == "__main__":
    main()
