"""Planning and launching mlptrain's own matrix-product kernel (kernels.cu: gemm).

A plan fixes, for one product's shape, the tile configuration and the split of K over thread
blocks, so the skinny products of a small-batch MLP still occupy the whole GPU: a 64 x 784 x 128
forward product has 8 tiles of 32 x 32; split 8 ways along K it keeps 64 blocks busy and a
fixed-order reduction sums the slices. Every launch is a plain kernel, so it can be captured.

A plan also fixes the multiply (`mma`, kernels.cu's MMA_*): float32 products may run on the
tensor cores, as 3xTF32 (each operand split into a TF32 head and tail, three products summed in
fp32: fp32-level error; MMA_3XTF32_RN) or, opted into, as plain TF32 (~1e-3 relative error);
float64 always runs on the fp64 units (MMA_SIMT). One template serves both: a tile's threads
are its warps, each warp computing (8 TM) x (4 TN) outputs with m16n8k8 mma instructions.
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
# eager path's kind, whose graph and groups run our SIMT kernel: 3xTF32 (gemm kind "tc3") was
# no faster than it (H200: 742 us against 771 us over the 45 products of
# benchmarks/results/tf32-2026-12-07.md, at most 15% on the largest), so the default keeps the
# kernel every fp32 run has used. 3xTF32 is MMA_3XTF32_RN: MMA_3XTF32, summed on the tensor
# cores alone, had up to 10x the SIMT kernel's error, MMA_3XTF32_RN at most 2.5x.
MMAS = {"own": (MMA_SIMT,), "tc3": (MMA_3XTF32_RN,), "tf32": (MMA_TF32,),
        "cublas": (MMA_SIMT,)}

# (BM, BN, BK, TM, TN): block tile, depth of a K step, register tile per thread
TILES = {
    "small": (32, 32, 16, 4, 4),  # 64 threads
    "medium": (64, 64, 16, 4, 4),  # 256 threads
    "tall": (128, 64, 8, 8, 4),  # 256 threads
    "large": (128, 128, 8, 8, 8),  # 256 threads, 64 outputs each
}
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # K-splits a tuner tries
MAX_PARTIALS = 1 << 23  # elements of split-K scratch a plan may use
TRANSPOSES = ((False, True), (True, False), (False, False))  # x W^T, dz^T x, dz W
TARGET_BLOCKS = 264  # two waves' worth of blocks on a 132-SM H100
LARGE_AREA = 128 * 128 * 48  # outputs from which the large tile is worth trying (and compiling)

def gemm_name(dtype, trans_a: bool, trans_b: bool, tile: str, mma: int = MMA_SIMT) -> str:
    bm, bn, bk, tm, tn = TILES[tile]
    flag = lambda t: "true" if t else "false"
    last = "" if mma == MMA_SIMT else f",{mma}"  # the SIMT kernel keeps its name
    return f"gemm<{ctype(dtype)},{flag(trans_a)},{flag(trans_b)},{bm},{bn},{bk},{tm},{tn}{last}>"


def kernel_names(dtype, tiles=TILES, mmas=(MMA_SIMT,)) -> list[str]:
    return [gemm_name(dtype, ta, tb, t, mma) for ta, tb in TRANSPOSES for t in tiles
            for mma in mmas]


def mmas_for(dtype, kind: str) -> tuple[int, ...]:
    """The multiplies a product of this dtype may use under CupyBackend's gemm kind."""
    return MMAS[kind] if np.dtype(dtype) == np.float32 else (MMA_SIMT,)


def tiles_for(m: int, n: int) -> list[str]:
    """The tiles worth trying for an (m, n) output: the large one only for large outputs (its
    kernel is also the slowest to compile, so small runs never compile it)."""
    return [t for t in TILES if t != "large" or m * n >= LARGE_AREA]


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


def plan(m: int, n: int, k: int, tile: str | None = None, splits: int | None = None,
         inline_reduce: bool = False, mma: int = MMA_SIMT) -> GemmPlan:
    """The tile and K-split for an (m, n, k) product (n counting a ones column, if any): a
    heuristic; EpochGraph times the candidates instead."""
    if tile is None:
        area = m * n
        tile = "large" if area >= LARGE_AREA else "medium" if area >= 64 * 64 * 40 else "small"
    bm, bn, bk, tm, tn = TILES[tile]
    tiles = -(-m // bm) * -(-n // bn)
    if splits is None:
        # split K while each slice keeps >= 4 K-steps and the grid is short of TARGET_BLOCKS
        splits = max(1, min(TARGET_BLOCKS // tiles, k // (4 * bk)))
    k_chunk = -(-k // splits)
    k_chunk = -(-k_chunk // bk) * bk  # whole K-steps per slice
    splits = -(-k // k_chunk)
    return GemmPlan(tile, splits, k_chunk, (-(-n // bn), -(-m // bm), splits),
                    (bm // tm) * (bn // tn), inline_reduce and splits > 1, mma)


def candidates(m: int, n: int, k: int, mmas=(MMA_SIMT,)) -> list[GemmPlan]:
    """Every distinct (tile, split, multiply) worth timing for an (m, n, k) product."""
    plans = {}
    for mma in mmas:
        for tile in tiles_for(m, n):
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
                              mma=mmas_for(dtype, self.kind)[0])
        if p.mma != MMA_SIMT and dtype != np.float32:
            raise ValueError(f"a {dtype} product has no tensor-core kernel (plan {p})")
        grid = p.grid if batches == 1 else (*p.grid[:2], batches)
        partial = counters = None
        if p.splits > 1:
            partial, counters = scratch or self.scratch(dtype, p.partials(m_out, n_out), p.tiles)
            counters = counters if p.inline_reduce else None
        opt = lambda v: NULL if v is None else v
        self.function(gemm_name(dtype, trans_a, trans_b, p.tile, p.mma))(
            grid, (p.threads,),
            (a, b, c, opt(gather_a), opt(gather_b), np.int32(m), np.int32(n), np.int32(k),
             np.int32(lda), np.int32(ldb), np.int32(p.k_chunk), opt(partial), opt(counters),
             opt(ones_out), np.int32(ones_row), np.int32(mode), opt(bias), opt(ymask), opt(dmask),
             np.int32(act), dtype.type(slope), np.int32(batches), *map(np.int64, strides)))
        if partial is not None and not p.inline_reduce:
            blocks = min(-(-(m_out * n_out) // 256), 1024)
            self.function(f"splitk_reduce<{ctype(dtype)}>")(
                (blocks,), (256,),
                (partial, np.int32(p.splits), np.int32(m), np.int32(n), c, opt(ones_out),
                 np.int32(ones_row), np.int32(mode), opt(bias), opt(ymask), opt(dmask), np.int32(act),
                 dtype.type(slope)))
        return c
