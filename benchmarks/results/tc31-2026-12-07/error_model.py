"""A NumPy model of the worst elementwise error |C - C64| / (|A||B|) of the products we train:
the SIMT kernel (one fp32 fused multiply-add per k, in order, no K-split) against 3xTF32 as
gemm_tc computes it: hi = x rounded to TF32, lo = x - hi rounded (cvt.rna, "rna") or truncated
("trunc": what the tensor cores make of the raw lo, gemm_tc's scheme); each 8-deep K-step's
three products (cross terms first) summed exactly and truncated to fp32 after each mma, the sum
added to the running fp32 sums rounded to nearest every K-step (KF = 1) or every two (KF = 2);
"separate": the cross terms and hi * hi each summed from zero on the tensor cores every K-step
(hi * hi's 22-bit products mostly sum exactly), added together in fp32, then to the running
sums; "two adds": each added to the running sums in turn.

A model of the tensor cores' rounding, not a measurement (tests/test_gpu_tc.py and
test_gpu_tf32.py measure it). Its SIMT errors match test_gpu_tf32.py's measured ones on the same
operands; for lo rounded with KF = 2 it gave 3.05x SIMT where the tf32 branch measured 2.46x.

    python error_model.py            # mnist-deep's products (configs/mnist-deep.toml, batch 128)
    python error_model.py mnist      # test_gpu_tf32.py's 45 products of 784-H-10
"""
import sys

import numpy as np

f32, f64 = np.float32, np.float64


def rna(x):  # to TF32, nearest, ties away (cvt.rna; gemm_tc's integer add and mask)
    return ((x.astype(f32).view(np.uint32) + np.uint32(0x1000))
            & np.uint32(0xffffe000)).view(f32)


def trunc(x):  # to TF32 toward zero (how the tensor cores read a raw fp32 operand)
    return (x.astype(f32).view(np.uint32) & np.uint32(0xffffe000)).view(f32)


def rz32(x):  # fp64 -> fp32 toward zero
    y = x.astype(f32)
    over = np.abs(y.astype(f64)) > np.abs(x)
    y[over] = np.nextafter(y[over], f32(0))
    return y


def simt(A, B):
    acc = np.zeros((A.shape[0], B.shape[1]), f32)
    A64, B64 = A.astype(f64), B.astype(f64)
    for k in range(A.shape[1]):
        acc = (acc.astype(f64) + np.outer(A64[:, k], B64[k])).astype(f32)  # one rounding: FMA
    return acc


def tc3(A, B, lo="trunc", kf=1, separate=False):
    ah, bh = rna(A), rna(B)
    al, bl = (rna if lo == "rna" else trunc)(A - ah), (rna if lo == "rna" else trunc)(B - bh)
    d = lambda x: x.astype(f64)  # noqa: E731
    acc = np.zeros((A.shape[0], B.shape[1]), f32)
    part, K = None, A.shape[1]
    for s, k in enumerate(range(0, K, 8)):
        sl = slice(k, min(K, k + 8))
        t1, t2, t3 = d(al[:, sl]) @ d(bh[sl]), d(ah[:, sl]) @ d(bl[sl]), d(ah[:, sl]) @ d(bh[sl])
        if separate:  # two sums from zero on the tensor cores, then fp32 adds
            small, big = rz32(d(rz32(t1)) + t2), rz32(t3)
            if separate == "two adds":  # acc += big, acc += small
                acc = (d((d(acc) + d(big)).astype(f32)) + d(small)).astype(f32)
            else:  # acc += (big + small)
                acc = (d(acc) + d((d(big) + d(small)).astype(f32))).astype(f32)
            continue
        base = 0.0 if s % kf == 0 else d(part)
        part = rz32(d(rz32(d(rz32(base + t1)) + t2)) + t3)
        if s % kf == kf - 1 or k + 8 >= K:
            acc = (d(acc) + d(part)).astype(f32)
    return acc


def err(C, A, B):
    A64, B64 = A.astype(f64), B.astype(f64)
    want, scale = A64 @ B64, np.abs(A64) @ np.abs(B64)
    return float((np.abs(C - want) / np.where(scale > 0, scale, 1)).max())


def deep_products(rng):
    widths, batch = (784, 2500, 2000, 1500, 1000, 500, 10), 128
    for i, (fi, fo) in enumerate(zip(widths[:-1], widths[1:])):
        wt = (rng.uniform(-1, 1, (fi, fo)) * np.sqrt(6 / fi)).astype(f32)
        x = (rng.random((batch, fi)) * (rng.random((batch, fi)) < 0.2) if i == 0
             else np.maximum(rng.standard_normal((batch, fi)), 0)).astype(f32)
        dz = (rng.standard_normal((batch, fo)) * 1e-3).astype(f32)
        yield f"forward {i}", x, wt
        yield f"weight grad {i}", np.ascontiguousarray(x.T), dz
        if i > 0:
            yield f"input grad {i}", dz, np.ascontiguousarray(wt.T)


def mnist_products(rng):  # test_gpu_tf32.training_products, in its order of draws
    for hidden in (128, 1024, 2048):
        for batch in (64, 128, 1024):
            x = rng.random((batch, 784)) * (rng.random((batch, 784)) < 0.2)
            w0 = rng.uniform(-1, 1, (hidden, 784)) * np.sqrt(6 / (784 + hidden))
            w1 = rng.uniform(-1, 1, (10, hidden)) * np.sqrt(6 / (hidden + 10))
            h = np.maximum(rng.standard_normal((batch, hidden)), 0)
            dz1 = rng.standard_normal((batch, 10)) * 1e-2
            dz0 = rng.standard_normal((batch, hidden)) * 1e-3 * (h > 0)
            f = lambda v: np.ascontiguousarray(v.astype(f32))  # noqa: E731
            net = f"H={hidden} B={batch}"
            yield f"{net} forward 0", f(x), f(w0.T)
            yield f"{net} forward 1", f(h), f(w1.T)
            yield f"{net} weight grad 0", f(x.T), f(dz0)
            yield f"{net} weight grad 1", f(h.T), f(dz1)
            yield f"{net} input grad 1", f(dz1), f(w1)


VARIANTS = {"lo rounded": dict(lo="rna"), "gemm_tc (lo truncated)": dict(lo="trunc"),
            "KF = 2": dict(lo="trunc", kf=2), "separate": dict(lo="trunc", separate=True),
            "separate, two adds": dict(lo="trunc", separate="two adds")}

if __name__ == "__main__":
    products = mnist_products if sys.argv[1:] == ["mnist"] else deep_products
    print("| product | m x n x k | SIMT | " + " | ".join(VARIANTS) + " |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in VARIANTS) + " |")
    worst = dict.fromkeys(VARIANTS, 0.0)
    for label, A, B in products(np.random.default_rng(0)):
        s = err(simt(A, B), A, B)
        cells = []
        for name, kw in VARIANTS.items():
            e = err(tc3(A, B, **kw), A, B)
            worst[name] = max(worst[name], e / s)
            cells.append(f"{e:.2e} ({e / s:.2f}x)")
        print(f"| {label} | {A.shape[0]}x{B.shape[1]}x{A.shape[1]} | {s:.2e} | "
              + " | ".join(cells) + " |", flush=True)
    print("| worst / SIMT | | | " + " | ".join(f"{w:.2f}x" for w in worst.values()) + " |")
