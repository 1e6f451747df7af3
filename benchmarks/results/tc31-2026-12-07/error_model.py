"""A NumPy model of the worst elementwise error |C - C64| / (|A||B|) of mnist-deep's products:
the SIMT kernel (one fp32 fused multiply-add per k, in order, no K-split) against 3xTF32 as
gemm_tc computes it (hi = x rounded to TF32, lo = x - hi rounded (cvt.rna, "rna") or truncated
("trunc", what the tensor cores make of the raw lo); each 8-deep K-step's three products summed
exactly and truncated to fp32 after each mma; the K-step sum added to the running fp32 sums
rounded to nearest, every K-step (KF = 1) or every two (KF = 2)). A model of the tensor cores'
rounding, not a measurement: tests/test_gpu_tc.py measures it.   python error_model.py [small]  (small: not the two largest)"""
import numpy as np, sys
rng = np.random.default_rng(0)
f32 = np.float32

def rna(x):  # round to tf32, nearest ties away (cvt.rna)
    b = x.astype(f32).view(np.uint32)
    return ((b + np.uint32(0x1000)) & np.uint32(0xffffe000)).view(f32)
def trunc(x):
    return (x.astype(f32).view(np.uint32) & np.uint32(0xffffe000)).view(f32)
def rz32(x):  # fp64 -> fp32 toward zero
    y = x.astype(f32)
    over = np.abs(y.astype(np.float64)) > np.abs(x)
    y[over] = np.nextafter(y[over], f32(0))
    return y

def simt(A, B):
    acc = np.zeros((A.shape[0], B.shape[1]), f32)
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    for k in range(A.shape[1]):
        acc = (acc.astype(np.float64) + np.outer(A64[:, k], B64[k])).astype(f32)  # FMA
    return acc

def tc3(A, B, lo_mode="rna", kf=1):
    ah = rna(A); al = A - ah
    bh = rna(B); bl = B - bh
    al = rna(al) if lo_mode == "rna" else trunc(al)
    bl = rna(bl) if lo_mode == "rna" else trunc(bl)
    d = lambda x: x.astype(np.float64)
    acc = np.zeros((A.shape[0], B.shape[1]), f32)
    K = A.shape[1]
    part = None
    for s, k in enumerate(range(0, K, 8)):
        sl = slice(k, min(K, k + 8))
        base = 0.0 if s % kf == 0 else d(part)
        p = rz32(base + d(al[:, sl]) @ d(bh[sl]))
        p = rz32(d(p) + d(ah[:, sl]) @ d(bl[sl]))
        part = rz32(d(p) + d(ah[:, sl]) @ d(bh[sl]))
        if s % kf == kf - 1 or k + 8 >= K:
            acc = (d(acc) + d(part)).astype(f32)
    return acc

def err(C, A, B):
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    want, scale = A64 @ B64, np.abs(A64) @ np.abs(B64)
    return float((np.abs(C - want) / np.where(scale > 0, scale, 1)).max())

DEEP, BATCH = (784, 2500, 2000, 1500, 1000, 500, 10), 128
which = sys.argv[1:] or ["all"]
rows = []
for i, (fi, fo) in enumerate(zip(DEEP[:-1], DEEP[1:])):
    wt = (rng.uniform(-1, 1, (fi, fo)) * np.sqrt(6 / fi)).astype(f32)
    x = (rng.random((BATCH, fi)) * (rng.random((BATCH, fi)) < 0.2) if i == 0
         else np.maximum(rng.standard_normal((BATCH, fi)), 0)).astype(f32)
    dz = (rng.standard_normal((BATCH, fo)) * 1e-3).astype(f32)
    prods = [(f"forward {i}", x, wt), (f"wgrad {i}", np.ascontiguousarray(x.T), dz)]
    if i > 0:
        prods.append((f"igrad {i}", dz, np.ascontiguousarray(wt.T)))
    for label, A, B in prods:
        if A.shape[0] * B.shape[1] > 2.1e6 and "big" not in which and "all" not in which:
            continue
        e = {"simt": err(simt(A, B), A, B)}
        for mode in ("rna", "trunc"):
            e[mode] = err(tc3(A, B, mode), A, B)
        e["trunc-kf2"] = err(tc3(A, B, "trunc", 2), A, B)
        print(f"{label:12s} {A.shape[0]}x{B.shape[1]}x{A.shape[1]}  simt {e['simt']:.2e}  "
              f"3x rna {e['rna']:.2e} ({e['rna']/e['simt']:.2f}x)  3x trunc-lo {e['trunc']:.2e} "
              f"({e['trunc']/e['simt']:.2f}x)  trunc kf2 {e['trunc-kf2']:.2e} ({e['trunc-kf2']/e['simt']:.2f}x)",
              flush=True)
