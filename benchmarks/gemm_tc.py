"""Microseconds per matrix product of the nets we train, each of mlptrain's kernels at its fastest
plan against cuBLAS and PyTorch: SIMT (fp32 units), 3xTF32 on the tensor cores' fast kernel
(kernels.cu gemm_tc: fp32-level error; what the fp32 default's tuner times beside SIMT), plain
TF32 on it (train.precision = "tf32", ~1e-3), and on request the same multiplies in the SIMT
kernel's template ("3xtf32-old", "tf32-old": branch tf32's first tensor-core kernel).

Each kernel's time is the best of every (tile, K-split) plan of its tiles, each timed as a CUDA
graph of 20 launches, best of three replays; cuBLAS (cp.matmul, fp32) and, where PyTorch is
installed, torch.matmul with TF32 off and on, over 20 back-to-back eager calls (so their small
products carry ~20-35 us of call overhead each). The products are those of one training step as
the epoch graph runs them (weights stored as W^T (I, O)): forward x W^T, the weight gradient
[x | 1]^T dz (its ones row gives the bias gradient) and the input gradient dz W.

    python benchmarks/gemm_tc.py [--nets deep,large,mnist] [--kernels simt,3xtf32,tf32]
    (kernels also: 3xtf32-kf2, gemm_tc's 3xTF32 adding every two K-steps; 3xtf32-old, tf32-old)

nets: deep = configs/mnist-deep.toml (784-2500-2000-1500-1000-500-10, batch 128); large = 784-H-10
at H = 1024, 2048 and batch 1024; mnist = 784-H-10 at H = 128, 1024, 2048 and batch 64, 128, 1024.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPS = 20
NETS = {"deep": [((784, 2500, 2000, 1500, 1000, 500, 10), 128)],
        "large": [((784, h, 10), 1024) for h in (1024, 2048)],
        "mnist": [((784, h, 10), b) for h in (128, 1024, 2048) for b in (64, 128, 1024)]}


def step_products(widths, batch, rng, cp):
    """(label, a, b, m, n, k, trans_a, trans_b, ones row) of one step, as the epoch graph."""
    products = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        x = cp.asarray(rng.random((batch, fan_in), dtype=np.float32))
        wt = cp.asarray(rng.standard_normal((fan_in, fan_out), dtype=np.float32))  # W^T (I, O)
        dz = cp.asarray(rng.standard_normal((batch, fan_out), dtype=np.float32))
        products.append((f"forward {fan_in}->{fan_out}", x, wt, batch, fan_out, fan_in, False,
                         False, False))
        products.append((f"weight grad {fan_in}x{fan_out}", x, dz, fan_in, fan_out, batch, True,
                         False, True))
        if i > 0:
            products.append((f"input grad {fan_out}->{fan_in}", dz, wt, batch, fan_in, fan_out,
                             False, True, False))
    return products


def main(argv=None) -> None:
    import cupy as cp

    from mlptrain.backend.cuda import gemm as G
    from mlptrain.backend.cupy_backend import CupyBackend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="deep,large")
    parser.add_argument("--kernels", default="simt,3xtf32,tf32")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    # name: (multiply, tiles, gemm_tc's KF): "3xtf32-kf2" sums two 8-deep K-steps on the
    # tensor cores before each fp32 add (gemm.TC_KF is 1)
    kinds = {"simt": (G.MMA_SIMT, G.TILES, 1),
             "3xtf32": (G.MMA_3XTF32_RN, G.TC_TILES, G.TC_KF),
             "3xtf32-kf2": (G.MMA_3XTF32_RN, G.TC_TILES, 2),
             "tf32": (G.MMA_TF32, G.TC_TILES, G.TC_KF),
             "3xtf32-old": (G.MMA_3XTF32_RN, G.TILES, 1), "tf32-old": (G.MMA_TF32, G.TILES, 1)}
    kernels = {k: kinds[k] for k in args.kernels.split(",")}
    gpu = CupyBackend(graph=False, gemm="own")
    default_kf, names = G.TC_KF, set()
    for mma, tiles, kf in kernels.values():
        G.TC_KF = kf  # gemm_name reads it
        names.update(G.kernel_names(np.float32, tiles, (mma,)))
    G.TC_KF = default_kf
    gpu.prepare_kernels(sorted(names))
    torch = None
    if args.torch:
        try:
            import torch
        except ImportError:
            pass
    stream, start, stop = cp.cuda.Stream(non_blocking=True), cp.cuda.Event(), cp.cuda.Event()
    scratch = (cp.empty(G.MAX_PARTIALS, np.float32), cp.zeros(4096, np.int32))

    def timed(launch) -> float:
        """Microseconds per launch: REPS launches captured once, best of three replays."""
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

    def plans(m, n, k, mma, tiles):
        found = {}
        for tile in tiles:
            for splits in G.SPLITS:
                for inline in (False, True):
                    p = G.plan(m, n, k, tile, splits, inline, mma)
                    if p.tiles * p.splits <= 4096 and p.partials(m, n) <= G.MAX_PARTIALS:
                        found[p.tile, p.splits, p.inline_reduce] = p
        return list(found.values())

    rng = np.random.default_rng(0)
    names = [*kernels, "cublas", *(("torch fp32", "torch tf32") if torch else ())]
    print(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    for net in args.nets.split(","):
        for widths, batch in NETS[net]:
            title = f"{'-'.join(map(str, widths))} B={batch}"
            print(f"\n### {title}\n")
            print("| product | m x n x k | " + " | ".join(names)
                  + " | 3xtf32 / simt speed-up | fastest plans |")
            print("| --- | --- | " + " | ".join("---:" for _ in names) + " | ---: | --- |")
            totals = dict.fromkeys(names, 0.0)
            for label, a, b, m, n, k, ta, tb, ones_row in step_products(widths, batch, rng, cp):
                out = cp.empty((m, n), np.float32)
                ones = cp.empty(max(m, n), np.float32)
                times, best_plans = {}, {}
                for name, (mma, tiles, kf) in kernels.items():
                    G.TC_KF, best = kf, (float("inf"), None)
                    for p in plans(m + ones_row, n, k, mma, tiles):
                        launch = lambda p=p: gpu.gemm(  # noqa: E731
                            a, b, out, m, n, k, a.shape[1], b.shape[1], ta, tb,
                            ones_out=ones if ones_row else None, ones_row=ones_row,
                            gemm_plan=p, scratch=scratch)
                        best = min(best, (timed(launch), p), key=lambda t: t[0])
                    times[name], best_plans[name] = best
                G.TC_KF = default_kf
                opa, opb = (a.T if ta else a), (b.T if tb else b)
                times["cublas"] = eager(lambda: cp.matmul(opa, opb, out=out))
                if torch:
                    ta_ = torch.as_tensor(opa, device="cuda")
                    tb_ = torch.as_tensor(opb, device="cuda")
                    for name, tf32 in (("torch fp32", False), ("torch tf32", True)):
                        torch.backends.cuda.matmul.allow_tf32 = tf32
                        times[name] = eager(lambda: torch.matmul(ta_, tb_))
                    torch.backends.cuda.matmul.allow_tf32 = False
                for name, t in times.items():
                    totals[name] += t
                speedup = (f"{times['simt'] / times['3xtf32']:.2f}x"
                           if "simt" in times and "3xtf32" in times else "")
                chosen = ", ".join(f"{x}: {p.tile}/{p.splits}{'i' * p.inline_reduce}"
                                   for x, p in best_plans.items() if p is not None)
                print(f"| {label} | {m}x{n}x{k} | "
                      + " | ".join(f"{times[x]:.1f}" for x in names)
                      + f" | {speedup} | {chosen} |", flush=True)
            speedup = (f"{totals['simt'] / totals['3xtf32']:.2f}x"
                       if "simt" in totals and "3xtf32" in totals else "")
            print("| **step** | | " + " | ".join(f"**{totals[x]:.1f}**" for x in names)
                  + f" | **{speedup}** | |")


if __name__ == "__main__":
    main()
