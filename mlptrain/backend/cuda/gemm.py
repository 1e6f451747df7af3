"""Planning and launching mlptrain's own matrix-product kernel (kernels.cu: gemm).

A plan fixes, for one product's shape, the tile configuration and the split of K over thread
blocks, so the skinny products of a small-batch MLP still occupy the whole GPU: a 64 x 784 x 128
forward product has 8 tiles of 32 x 32; split 8 ways along K it keeps 64 blocks busy and a
fixed-order reduction sums the slices. Every launch is a plain kernel, so it can be captured.

A plan also fixes the multiply (`mma`, kernels.cu's MMA_*): float32 products may run on the
tensor cores, as 3xTF32 (each operand split into a TF32 head and tail, three products summed in
fp32: fp32-level error; MMA_3XTF32_RN) or, opted into, as plain TF32 (~1e-3 relative error);
float64 always runs on the fp64 units (MMA_SIMT). The SIMT template (kernels.cu gemm) takes the
tensor-core multiplies too, in its own structure (TILES); the tensor cores' fast kernel
(kernels.cu gemm_tc: cp.async stages of 32-deep K-tiles, conflict-free vector fragment loads)
has its own tiles (TC_TILES). Both take the same arguments and support the same features, so a
plan picks either by its tile's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import cupy as cp
import numpy as np

from mlptrain.backend.cuda.kernels import (  # noqa: F401 - re-exported for callers
    ACT_IDS, CONSTANTS, EPI_ACT_GRAD, EPI_BIAS_ACT, EPI_STORE, ctype)

MMA_SIMT, MMA_TF32, MMA_3XTF32, MMA_3XTF32_RN = (
    CONSTANTS[k] for k in ("MMA_SIMT", "MMA_TF32", "MMA_3XTF32", "MMA_3XTF32_RN"))
# the multiplies a product may use, by CupyBackend's gemm kind (float32; float64: SIMT only);
# the epoch graph's tuner times each listed, the first is the untuned pick. "cublas" is the
# default (fp32) kind: its eager products run cuBLAS, its graph and groups our kernels, the
# tuner timing the SIMT kernel and 3xTF32 on gemm_tc for each product and keeping the faster
# (both at fp32's accuracy: 3xTF32 within 2.5x of the SIMT kernel's error on the products we
# train). "cublas-simt" is the default before gemm_tc (cuBLAS eagerly, the SIMT kernel in the
# graph and groups: MLPTRAIN_CUDA_GEMM=cublas-simt, to compare or to fall back); "own" is our
# SIMT kernel alone, eager products too (the reference the GPU tests hold the others to).
# 3xTF32 is MMA_3XTF32_RN: MMA_3XTF32, summed on the tensor cores alone, had up to 10x the SIMT
# kernel's error (benchmarks/results/tf32-2026-12-07.md).
MMAS = {"own": (MMA_SIMT,), "tc3": (MMA_3XTF32_RN,), "tf32": (MMA_TF32,),
        "cublas": (MMA_SIMT, MMA_3XTF32_RN), "cublas-simt": (MMA_SIMT,)}

# (BM, BN, BK, TM, TN): block tile, depth of a K step, register tile per thread
TILES = {
    "small": (32, 32, 16, 4, 4),  # 64 threads
    "medium": (64, 64, 16, 4, 4),  # 256 threads
    "tall": (128, 64, 8, 8, 4),  # 256 threads
    "large": (128, 128, 8, 8, 8),  # 256 threads, 64 outputs each
}
# gemm_tc's tiles (tensor-core multiplies only): (BM, BN, WM, WN, STAGES): block tile, warp
# tile, K-tiles (TC_BK deep) in flight
TC_TILES = {
    "tc-64x64": (64, 64, 32, 32, 3),  # 4 warps
    "tc-64x128": (64, 128, 64, 32, 3),  # 4 warps
    "tc-128x64": (128, 64, 64, 32, 3),  # 4 warps
    "tc-128x128": (128, 128, 64, 32, 3),  # 8 warps
}
TC_BK, TC_KPAD = CONSTANTS["TC_BK"], CONSTANTS["TC_KPAD"]  # gemm_tc's K-tile; its k-rows' words
# K-steps of 8 that MMA_3XTF32_RN sums on the tensor cores before each fp32 add: 1 is the most
# accurate and the fewest registers (166 on the 64 x 32 warp tile, against 242 for 2)
TC_KF = 1
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # K-splits a tuner tries
MAX_PARTIALS = 1 << 23  # elements of split-K scratch a plan may use
TRANSPOSES = ((False, True), (True, False), (False, False))  # x W^T, dz^T x, dz W
TARGET_BLOCKS = 264  # two waves' worth of blocks on a 132-SM H100
LARGE_AREA = 128 * 128 * 48  # outputs from which the large tile is worth trying (and compiling)
TC_AREA = 128 * 128 * 2  # outputs from which gemm_tc's tiles are tried
TC_LARGE_AREA = 128 * 128 * 8  # ... and its largest tile


def gemm_name(dtype, trans_a: bool, trans_b: bool, tile: str, mma: int = MMA_SIMT) -> str:
    flag = lambda t: "true" if t else "false"  # noqa: E731
    if tile in TC_TILES:
        bm, bn, wm, wn, stages = TC_TILES[tile]
        return (f"gemm_tc<{flag(trans_a)},{flag(trans_b)},{bm},{bn},{wm},{wn},{stages},{TC_KF},"
                f"{mma}>")
    bm, bn, bk, tm, tn = TILES[tile]
    last = "" if mma == MMA_SIMT else f",{mma}"  # the SIMT kernel keeps its name
    return f"gemm<{ctype(dtype)},{flag(trans_a)},{flag(trans_b)},{bm},{bn},{bk},{tm},{tn}{last}>"


def tc_shared_bytes(tile: str, trans_a: bool, trans_b: bool) -> int:
    """gemm_tc's dynamic shared memory: STAGES K-tiles of both operands (kernels.cu SA, SB)."""
    bm, bn, _, _, stages = TC_TILES[tile]
    sa = bm * TC_KPAD if not trans_a else TC_BK * bm
    sb = bn * TC_KPAD if trans_b else TC_BK * bn
    return stages * (sa + sb) * 4


def kernel_names(dtype, tiles=TILES, mmas=(MMA_SIMT,)) -> list[str]:
    return [gemm_name(dtype, ta, tb, t, mma) for ta, tb in TRANSPOSES for t in tiles
            for mma in mmas if t in TILES or (mma != MMA_SIMT and np.dtype(dtype) == np.float32)]


def mmas_for(dtype, kind: str) -> tuple[int, ...]:
    """The multiplies a product of this dtype may use under CupyBackend's gemm kind."""
    return MMAS[kind] if np.dtype(dtype) == np.float32 else (MMA_SIMT,)


def tiles_for(m: int, n: int, mma: int = MMA_SIMT, mmas=None) -> list[str]:
    """The tiles worth trying for an (m, n) output with this multiply (one of `mmas`, the
    kind's): the SIMT template's (the large one only for large outputs: its kernel is also the
    slowest to compile, so small runs never compile it), and for a tensor-core multiply
    gemm_tc's from TC_AREA outputs on; a kind without SIMT keeps the template's tiles for its
    tensor-core multiply too, for the products too small for gemm_tc's."""
    mmas = (mma,) if mmas is None else mmas
    tiles = []
    if mma == MMA_SIMT or MMA_SIMT not in mmas:
        tiles += [t for t in TILES if t != "large" or m * n >= LARGE_AREA]
    if mma != MMA_SIMT and m * n >= TC_AREA:
        tiles += [t for t in TC_TILES if t != "tc-128x128" or m * n >= TC_LARGE_AREA]
    return tiles


@dataclass(frozen=True)
class GemmPlan:
    tile: str
    splits: int
    k_chunk: int
    grid: tuple[int, int, int]
    threads: int
    inline_reduce: bool = False  # split-K summed by the last block, else by splitk_reduce
    mma: int = MMA_SIMT  # the multiply: MMA_SIMT, or (float32) MMA_3XTF32_RN, MMA_TF32, ...

    @property
    def tiles(self) -> int:
        return self.grid[0] * self.grid[1]

    def partials(self, m: int, n: int) -> int:
        return self.splits * m * n if self.splits > 1 else 0


def untuned_mma(mmas, m: int, n: int) -> int:
    """The multiply of a product given no plan (an untuned graph's, a group's stack): a kind's
    tensor-core multiply from gemm_tc's smallest output on (TC_AREA), else its first."""
    tensor = [mma for mma in mmas if mma != MMA_SIMT]
    return tensor[0] if tensor and (m * n >= TC_AREA or MMA_SIMT not in mmas) else mmas[0]


def plan(m: int, n: int, k: int, tile: str | None = None, splits: int | None = None,
         inline_reduce: bool = False, mma: int = MMA_SIMT) -> GemmPlan:
    """The tile and K-split for an (m, n, k) product (n counting a ones column, if any): a
    heuristic; EpochGraph times the candidates instead."""
    area = m * n
    if tile is None and mma != MMA_SIMT and area >= TC_AREA:
        tile = "tc-128x128" if area >= TC_LARGE_AREA else "tc-64x64"
    if tile is None:
        tile = "large" if area >= LARGE_AREA else "medium" if area >= 64 * 64 * 40 else "small"
    if tile in TC_TILES:
        bm, bn, wm, wn, _ = TC_TILES[tile]
        bk, threads = TC_BK, (bm // wm) * (bn // wn) * 32
    else:
        bm, bn, bk, tm, tn = TILES[tile]
        threads = (bm // tm) * (bn // tn)
    tiles = -(-m // bm) * -(-n // bn)
    if splits is None:
        # split K while each slice keeps >= 4 K-steps and the grid is short of TARGET_BLOCKS
        splits = max(1, min(TARGET_BLOCKS // tiles, k // (4 * bk)))
    k_chunk = -(-k // splits)
    k_chunk = -(-k_chunk // bk) * bk  # whole K-steps per slice
    splits = -(-k // k_chunk)
    return GemmPlan(tile, splits, k_chunk, (-(-n // bn), -(-m // bm), splits), threads,
                    inline_reduce and splits > 1, mma)


def candidates(m: int, n: int, k: int, mmas=(MMA_SIMT,)) -> list[GemmPlan]:
    """Every distinct (tile, split, multiply) worth timing for an (m, n, k) product."""
    plans = {}
    for mma in mmas:
        for tile in tiles_for(m, n, mma, mmas):
            for splits in SPLITS:
                for inline in (False, True):
                    p = plan(m, n, k, tile, splits, inline, mma)
                    if p.tiles * p.splits <= 4096 and p.partials(m, n) <= MAX_PARTIALS:
                        plans[p.tile, p.splits, p.inline_reduce, p.mma] = p
    return list(plans.values())


NULL = np.uint64(0)


def ptr(array, offset_elements: int = 0) -> np.uint64:
    """A device address as a kernel argument (offset into the array, in elements)."""
    if array is None:
        return NULL
    return np.uint64(array.data.ptr + offset_elements * array.itemsize)


class Gemm:
    """Launches C = op(A) @ op(B) with an optional fused epilogue."""

    def __init__(self, function, kind: str = "own"):
        self.function = function  # kernel name -> compiled function
        self.kind = kind  # a gemm kind of MMAS: the multiply of a product given no plan
        self._scratch = {}  # dtype -> (partials, counters), grown on demand

    def scratch(self, dtype, partials: int, tiles: int):
        """Split-K partials and tile counters (zeroed) of at least these sizes. Allocate them
        before a capture, never in it: a graph keeps its own (see __call__)."""
        have = self._scratch.get(np.dtype(dtype))
        if have is None or have[0].size < partials or have[1].size < tiles:
            have = self._scratch[np.dtype(dtype)] = (
                cp.empty(max(partials, 1), dtype=dtype), cp.zeros(max(tiles, 1), dtype=np.int32))
        return have

    def __call__(self, a, b, c, m: int, n: int, k: int, lda: int, ldb: int,
                 trans_a=False, trans_b=False, gather_a=None, gather_b=None, ones_out=None,
                 ones_row=False, mode=EPI_STORE, bias=None, ymask=None, act=0, slope=0.0, gemm_plan=None,
                 scratch=None, dmask=None, batches=1, strides=(0, 0, 0)):
        """`scratch` (partials, counters), or the shared one, serves split-K; a captured graph
        passes its own, so later eager calls that grow the shared one cannot free memory it
        points at. `batches` > 1: that many products of a stack, `strides` elements apart in
        a, b and c (0: shared), each over the whole of K."""
        dtype = c.dtype
        m_out = m + (ones_out is not None and ones_row)  # counting the ones row or column
        n_out = n + (ones_out is not None and not ones_row)
        p = gemm_plan or plan(m_out, n_out, k, splits=1 if batches > 1 else None,
                              mma=untuned_mma(mmas_for(dtype, self.kind), m_out, n_out))
        if (p.mma != MMA_SIMT and dtype != np.float32) or (p.tile in TC_TILES
                                                            and p.mma == MMA_SIMT):
            raise ValueError(f"a {dtype} product has no such kernel (plan {p})")
        grid = p.grid if batches == 1 else (*p.grid[:2], batches)
        partial = counters = None
        if p.splits > 1:
            partial, counters = scratch or self.scratch(dtype, p.partials(m_out, n_out), p.tiles)
            counters = counters if p.inline_reduce else None
        opt = lambda v: NULL if v is None else v
        shared = tc_shared_bytes(p.tile, trans_a, trans_b) if p.tile in TC_TILES else 0
        self.function(gemm_name(dtype, trans_a, trans_b, p.tile, p.mma))(
            grid, (p.threads,),
            (a, b, c, opt(gather_a), opt(gather_b), np.int32(m), np.int32(n), np.int32(k),
             np.int32(lda), np.int32(ldb), np.int32(p.k_chunk), opt(partial), opt(counters),
             opt(ones_out), np.int32(ones_row), np.int32(mode), opt(bias), opt(ymask), opt(dmask),
             np.int32(act), dtype.type(slope), np.int32(batches), *map(np.int64, strides)),
            shared_mem=shared)
        if partial is not None and not p.inline_reduce:
            blocks = min(-(-(m_out * n_out) // 256), 1024)
            self.function(f"splitk_reduce<{ctype(dtype)}>")(
                (blocks,), (256,),
                (partial, np.int32(p.splits), np.int32(m), np.int32(n), c, opt(ones_out),
                 np.int32(ones_row), np.int32(mode), opt(bias), opt(ymask), opt(dmask), np.int32(act),
                 dtype.type(slope)))
        return c
