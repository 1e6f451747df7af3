// mlptrain's CUDA kernels (compiled at run time by CuPy's NVRTC; T is float or double).
//
// Each kernel computes one of the model's primitives with the same formula, in the same order of
// roundings where that matters, as the NumPy backend (nn.py, optim.py), so float64 results agree
// to rounding. Nothing here calls cuBLAS: every kernel can be captured in a CUDA graph.
// Shapes: B the batch, I a layer's inputs, O its outputs, C the classes.

#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_LEAKY 2
#define ACT_TANH 3
#define ACT_SIGMOID 4
#define ACT_GELU 5

#define GATHER_MAX 1024    // gathered B rows a GEMM block stages in shared memory

#define EPI_STORE 0       // C = A @ B
#define EPI_BIAS_ACT 1    // C = act(A @ B + bias)          (forward: fused bias + activation)
#define EPI_ACT_GRAD 2    // C = (A @ B) * act'(Y)          (backward: dx times the derivative;
                          //   Y is z for an activation whose derivative reads its input)

// Products and sums rounded one at a time (no fused multiply-add), where a kernel must round as
// NumPy does: float and double overloads of the correctly rounded intrinsics.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// tanh, called rather than inlined: float's tanh is a long inline expansion, and a GEMM tile
// inlines its epilogue once per output of a thread's register tile (TM x TN copies, each
// with every activation's case), so NVRTC took 3-6 s per gemm instantiation instead of
// 0.4-1.5 s: most of a cold start. A call returns the same value; ReLU's cases never make one.
template <typename T> __device__ __noinline__ T tanh_of(T z) { return tanh(z); }

// GELU's u = C z (1 + A z^2), C = sqrt(2/pi), A = 0.044715 (nn.GELU)
template <typename T> __device__ __forceinline__ T gelu_u(T z) {
    return T(0.7978845608028654) * z * (T(1) + T(0.044715) * z * z);
}

template <typename T> __device__ __forceinline__ T act_forward(T z, int act, T slope) {
    switch (act) {
    case ACT_RELU: return z > T(0) ? z : T(0);                   // max(z, 0)
    case ACT_LEAKY: { T s = slope * z; return z > s ? z : s; }   // max(z, slope z)
    case ACT_TANH: return tanh_of<T>(z);
    case ACT_SIGMOID: return (tanh_of<T>(z * T(0.5)) + T(1)) * T(0.5);  // stable: (1 + tanh(z/2)) / 2
    case ACT_GELU: return T(0.5) * z * (T(1) + tanh_of<T>(gelu_u(z)));  // nn.GELU's tanh form
    default: return z;
    }
}

// dz = dy * f'(z), the derivative read from the saved output y = f(z), or from z itself for
// GELU (not monotonic: y does not give z back), whose callers pass z as `y`
template <typename T> __device__ __forceinline__ T act_backward(T y, T dy, int act, T slope) {
    switch (act) {
    case ACT_RELU: return y > T(0) ? dy : dy * T(0);  // dy * [y > 0] (keeps NaN and -0 as NumPy)
    case ACT_LEAKY: return dy * (y > T(0) ? T(1) : slope);
    case ACT_TANH: return dy * (T(1) - y * y);
    case ACT_SIGMOID: return dy * (y * (T(1) - y));
    case ACT_GELU: {  // 0.5 (1 + t) + 0.5 z (1 - t^2) C (1 + 3 A z^2), t = tanh(u), y = z here
        const T t = tanh_of<T>(gelu_u(y));
        const T du = T(0.7978845608028654) * (T(1) + T(3 * 0.044715) * y * y);
        return dy * (T(0.5) * (T(1) + t) + T(0.5) * y * (T(1) - t * t) * du);
    }
    default: return dy;
    }
}

// EPI_ACT_GRAD with a dropout mask (dmask non-null): (A @ B) * mask first, then * act'(Y), the
// eager path's order (Dropout.backward, then activation_backward).
template <typename T> __device__ __forceinline__ T epilogue(
        T acc, int m, int n, int N, int mode, const T* bias, const T* ymask, const T* dmask,
        int act, T slope) {
    if (mode == EPI_BIAS_ACT) return act_forward<T>(acc + bias[n], act, slope);
    if (mode == EPI_ACT_GRAD) {
        const long long e = (long long)m * N + n;
        if (dmask) acc *= dmask[e];
        return act_backward<T>(ymask[e], acc, act, slope);
    }
    return acc;
}

// ---------------------------------------------------------------------------------------------
// Matrix product C (M, N) = op(A) (M, K) @ op(B) (K, N), tiled in shared memory with a TM x TN
// register tile per thread. op(A)(m, k) is A[m * lda + k], or A[k * lda + m] when TA (stored
// transposed); op(B)(k, n) is B[k * ldb + n], or B[n * ldb + k] when TB.
// gather_a / gather_b (or null) pick the stored rows of A / B (rows m of A, or k when TA; rows k
// of B, untransposed only): the mini-batch is read straight from the resident dataset through
// the epoch's permutation, with no copy.
// ones_out (or null) adds a column N of ones to B (ones_row = 0), whose products, C's row sums,
// land in ones_out[m]; or a row M of ones to A (ones_row = 1), C's column sums landing in
// ones_out[n]: the bias gradient falls out of the weight gradient's product.
// Split-K: blockIdx.z takes K-range [z * k_chunk, (z + 1) * k_chunk); with partial non-null each
// split writes its own (M, N+1) slice, and either the tile's last block to finish (counted in
// counters[tile], which it resets) or, with counters null, splitk_reduce sums the slices in the
// fixed order z = 0, 1, ... (so results are deterministic) and applies the epilogue.
// A stack of products (batches > 1, a group's models; no split-K, gathers or ones): blockIdx.z is
// the product, whose A, B and C start stride_a, stride_b and stride_c elements further on (a
// stride of 0: one operand that every product reads).
// MMA (float only) picks the multiply: MMA_SIMT, one fused multiply-add per product on the fp32
// (fp64) units; or the tensor cores' m16n8k8 TF32 mma.sync, with a warp computing a (8 TM) x
// (4 TN) tile, each of its threads holding TM x TN of the outputs in the mma's fragment layout
// (row_of, col_of below). The thread count, the tile loads and every epilogue stay the same.
// ---------------------------------------------------------------------------------------------
#define MMA_SIMT 0    // FMA on the fp32/fp64 units (float64's only kernel)
#define MMA_TF32 1    // one TF32 product: 10-bit mantissas, relative error ~1e-3 (opt-in)
#define MMA_3XTF32 3  // a = hi + lo, hi = tf32(a), lo = tf32(a - hi): hi*hi + hi*lo + lo*hi,
                      //   fp32-level error (lo*lo, ~2^-22 relative, is left out)
#define MMA_3XTF32_RN 4  // 3xTF32 whose tensor cores sum each K-tile from zero, the tiles then
                         //   added in fp32 rounded to nearest: the tensor cores' own running
                         //   fp32 sums are not (they truncate): MMA_3XTF32's worst error on
                         //   the products we train was up to 10x the SIMT kernel's, this one's
                         //   at most 2.5x (H200, benchmarks/results/tf32-2026-12-07.md)

// x rounded to TF32 (nearest, ties away: cvt.rna), as the 32-bit register the mma reads
__device__ __forceinline__ unsigned to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// d += a (16 x 8, row-major fragment) @ b (8 x 8, column fragment), TF32 in, fp32 accumulate
__device__ __forceinline__ void mma_tf32(float& d0, float& d1, float& d2, float& d3,
                                         const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename T, bool TA, bool TB, int BM, int BN, int BK, int TM, int TN, int MMA = MMA_SIMT>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
gemm(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
     const long long* __restrict__ gather_a, const long long* __restrict__ gather_b,
     int M, int N, int K, int lda, int ldb, int k_chunk,
     T* __restrict__ partial, int* __restrict__ counters, T* __restrict__ ones_out, int ones_row,
     int mode, const T* __restrict__ bias, const T* __restrict__ ymask,
     const T* __restrict__ dmask, int act, T slope, int batches, long long stride_a,
     long long stride_b, long long stride_c) {
    constexpr int DM = BM / TM, DN = BN / TN, THREADS = DM * DN;
    constexpr int LA = (BM * BK + THREADS - 1) / THREADS, LB = (BN * BK + THREADS - 1) / THREADS;
    // SIMT: keeps rows 16-byte aligned for vector reads. MMA: a row of BM + 8 words (BM a
    // multiple of 32) puts a fragment read's 32 lanes, 4 k-rows by 8 columns, in 32 banks.
    constexpr int PAD = MMA != MMA_SIMT ? 8 : 16 / sizeof(T);
    static_assert(MMA == MMA_SIMT || (sizeof(T) == 4 && TM % 2 == 0 && TN % 2 == 0 &&
                                      BK % 8 == 0 && BM % 32 == 0),
                  "a tensor-core tile: float, even TM and TN, BK a multiple of 8");
    __shared__ __align__(16) T As[BK][BM + PAD];
    __shared__ __align__(16) T Bs[BK][BN + PAD];
    const int tid = threadIdx.x, tx = tid % DN, ty = tid / DN;
    // MMA: warp (wr, wc) of the block's (BM / WM) x (BN / WN), lane = 4 g + q; its rows
    // 16 a + {g, g + 8} and columns 8 b + 2 q + {0, 1} of each 16 x 8 mma tile (a, b)
    constexpr int WM = 8 * TM, WN = 4 * TN;
    const int lane = tid % 32, g = lane / 4, q = lane % 4;
    const int wr = (tid / 32) / (BN / WN), wc = (tid / 32) % (BN / WN);
    auto row_of = [&](int i) {  // the block row of this thread's output i (of TM)
        return MMA == MMA_SIMT ? ty * TM + i : wr * WM + 16 * (i / 2) + 8 * (i % 2) + g;
    };
    auto col_of = [&](int j) {  // the block column of its output j (of TN)
        return MMA == MMA_SIMT ? tx * TN + j : wc * WN + 8 * (j / 2) + 2 * q + (j % 2);
    };
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int Mp = M + (ones_out != nullptr && ones_row);
    const int Np = N + (ones_out != nullptr && !ones_row);
    const int split = batches > 1 ? 0 : blockIdx.z;
    if (batches > 1) {
        A += blockIdx.z * stride_a;
        B += blockIdx.z * stride_b;
        C += blockIdx.z * stride_c;
    }
    const int k_begin = split * k_chunk, k_end = min(K, k_begin + k_chunk);
    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    // The next tile is fetched into registers while this one is multiplied (latency hiding).
    // Threads run along each operand's stored-contiguous dimension, so loads coalesce.
    // Gathered rows are looked up once, not once per K-step: a dependent load in the K loop
    // would double its latency. A's rows stay with each thread; B's rows of this K-range are
    // staged in shared memory.
    long long arow[LA];
#pragma unroll
    for (int r = 0; r < LA; ++r) {
        const int m = m0 + (tid + r * THREADS) / BK;
        arow[r] = (!TA && gather_a && m < M) ? gather_a[m] * lda : (long long)m * lda;
    }
    __shared__ long long krow[GATHER_MAX];  // gathered rows indexed by k (TA's A, or B)
    const long long* gather_k = TA ? gather_a : (!TB ? gather_b : nullptr);
    const bool staged = gather_k && k_end - k_begin <= GATHER_MAX;
    if (staged) {
        for (int kk = tid; kk < k_end - k_begin; kk += THREADS) krow[kk] = gather_k[k_begin + kk];
        __syncthreads();
    }
    T ra[LA], rb[LB];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int r = 0; r < LA; ++r) {
            const int e = tid + r * THREADS;
            const int mm = TA ? e % BM : e / BK, kk = TA ? e / BM : e % BK;
            const int m = m0 + mm, k = k0 + kk;
            T v = T(0);
            if (e < BM * BK && m < M && k < k_end) {
                if (!TA) v = A[arow[r] + k];
                else if (staged && gather_k == gather_a) v = A[krow[k - k_begin] * lda + m];
                else v = A[(gather_a ? gather_a[k] : (long long)k) * lda + m];
            } else if (e < BM * BK && m < Mp && k < k_end) {
                v = T(1);  // the ones row
            }
            ra[r] = v;
        }
#pragma unroll
        for (int r = 0; r < LB; ++r) {
            const int e = tid + r * THREADS;
            const int nn = TB ? e / BK : e % BN, kk = TB ? e % BK : e / BN;
            const int n = n0 + nn, k = k0 + kk;
            T v = T(0);
            if (e < BN * BK && k < k_end) {
                if (n < N) {
                    if (TB) v = B[(long long)n * ldb + k];
                    else if (staged && gather_k == gather_b) v = B[krow[k - k_begin] * ldb + n];
                    else v = B[(gather_b ? gather_b[k] : (long long)k) * ldb + n];
                } else if (n < Np) {
                    v = T(1);  // the ones column
                }
            }
            rb[r] = v;
        }
    };
    auto stash = [&]() {
#pragma unroll
        for (int r = 0; r < LA; ++r) {
            const int e = tid + r * THREADS;
            if (e < BM * BK) As[TA ? e / BM : e % BK][TA ? e % BM : e / BK] = ra[r];
        }
#pragma unroll
        for (int r = 0; r < LB; ++r) {
            const int e = tid + r * THREADS;
            if (e < BN * BK) Bs[TB ? e % BK : e / BN][TB ? e / BK : e % BN] = rb[r];
        }
    };
    if (k_begin < k_end) {
        fetch(k_begin);
        stash();
    }
    __syncthreads();
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        if (more) fetch(k0 + BK);
        if constexpr (MMA == MMA_SIMT) {
#pragma unroll
            for (int kk = 0; kk < BK; ++kk) {
                T a[TM], b[TN];  // contiguous register tiles: vector reads from shared memory
#pragma unroll
                for (int i = 0; i < TM; ++i) a[i] = As[kk][ty * TM + i];
#pragma unroll
                for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx * TN + j];
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
            }
        } else {
            // Operands are split as they leave shared memory (a cvt and a subtraction per
            // value, cheaper than staging hi and lo, which would double the shared reads).
            // An infinite operand gives lo = inf - inf = NaN: such a product is NaN, not inf.
            constexpr bool SPLIT = MMA == MMA_3XTF32 || MMA == MMA_3XTF32_RN;
            float tile_acc[TM][TN];  // MMA_3XTF32_RN's sums of this K-tile (else unused)
            if constexpr (MMA == MMA_3XTF32_RN) {
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) tile_acc[i][j] = 0.0f;
            }
#pragma unroll
            for (int kk = 0; kk < BK; kk += 8) {
                unsigned ah[TM / 2][4], al[TM / 2][4], bh[TN / 2][2], bl[TN / 2][2];
#pragma unroll
                for (int a = 0; a < TM / 2; ++a) {
                    // A's fragment: rows g, g + 8 by columns (k) q, q + 4
                    const int r = wr * WM + 16 * a + g;
                    const float x[4] = {As[kk + q][r], As[kk + q][r + 8], As[kk + q + 4][r],
                                        As[kk + q + 4][r + 8]};
#pragma unroll
                    for (int v = 0; v < 4; ++v) {
                        ah[a][v] = to_tf32(x[v]);
                        if (SPLIT) al[a][v] = to_tf32(x[v] - __uint_as_float(ah[a][v]));
                    }
                }
#pragma unroll
                for (int b = 0; b < TN / 2; ++b) {
                    const int c = wc * WN + 8 * b + g;  // fragment: (k q, n g) (k q+4, n g)
                    const float y[2] = {Bs[kk + q][c], Bs[kk + q + 4][c]};
#pragma unroll
                    for (int v = 0; v < 2; ++v) {
                        bh[b][v] = to_tf32(y[v]);
                        if (SPLIT) bl[b][v] = to_tf32(y[v] - __uint_as_float(bh[b][v]));
                    }
                }
#pragma unroll
                for (int a = 0; a < TM / 2; ++a)
#pragma unroll
                    for (int b = 0; b < TN / 2; ++b) {
                        // the sums this mma adds to (a compile-time pick: registers either way)
                        float (&sum)[TM][TN] = *(MMA == MMA_3XTF32_RN ? &tile_acc : &acc);
                        float& d0 = sum[2 * a][2 * b];
                        float& d1 = sum[2 * a][2 * b + 1];
                        float& d2 = sum[2 * a + 1][2 * b];
                        float& d3 = sum[2 * a + 1][2 * b + 1];
                        if (SPLIT) {  // the small cross terms first
                            mma_tf32(d0, d1, d2, d3, al[a], bh[b]);
                            mma_tf32(d0, d1, d2, d3, ah[a], bl[b]);
                        }
                        mma_tf32(d0, d1, d2, d3, ah[a], bh[b]);
                    }
            }
            if constexpr (MMA == MMA_3XTF32_RN) {
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] += tile_acc[i][j];
            }
        }
        __syncthreads();
        if (more) {
            stash();
            __syncthreads();
        }
    }
    if (partial) {
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int m = m0 + row_of(i);
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int n = n0 + col_of(j);
                if (m < Mp && n < Np) partial[((long long)blockIdx.z * Mp + m) * Np + n] = acc[i][j];
            }
        }
        if (!counters) return;  // splitk_reduce, launched next, sums the slices
        __threadfence();  // this slice is visible before the count says so
        __syncthreads();
        __shared__ int is_last;
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        if (tid == 0) is_last = atomicAdd(&counters[tile], 1) == (int)gridDim.z - 1;
        __syncthreads();
        if (!is_last) return;
        __threadfence();
        // every output sums its slices in the order z = 0, 1, ...; the loop over slices is the
        // outer one, so the tile's loads of one slice go out together and the code holds one
        // load per output, not eight (unrolled inside each of the TM x TN outputs, it made the
        // large tile's compile twice as long)
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
        for (int z = 0; z < (int)gridDim.z; ++z) {
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const int m = m0 + row_of(i);
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const int n = n0 + col_of(j);
                    if (m < Mp && n < Np)
                        acc[i][j] += __ldcg(&partial[((long long)z * Mp + m) * Np + n]);  // L2
                }
            }
        }
        if (tid == 0) counters[tile] = 0;  // ready for the next launch
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + row_of(i);
        if (m >= Mp) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + col_of(j);
            if (n >= Np) continue;
            if (m == M) {
                ones_out[n] = acc[i][j];
            } else if (n == N) {
                ones_out[m] = acc[i][j];
            } else {
                C[(long long)m * N + n] = epilogue<T>(acc[i][j], m, n, N, mode, bias, ymask,
                                                      dmask, act, slope);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tensor cores' fast product (float only): the same C = op(A) @ op(B) as gemm, with every
// one of its features (transposes, gathers, the ones row or column, split-K with either
// reduction, the fused epilogues, stacks) and the same arguments, built for speed instead of
// sharing the SIMT kernel's structure:
// - operands go from global to shared memory by cp.async, 16 bytes at a time, STAGES K-tiles of
//   32 deep in flight, one barrier per K-tile; an edge chunk (past M, N or the K-range, a ones
//   row or column, an operand whose rows are not 16-byte aligned) is copied or written element
//   by element instead, so no feature costs the interior anything;
// - each warp computes WM x WN outputs: (WM / 16) x (WN / 8) m16n8k8 tiles per 8-deep K-step;
// - fragments are read with 64- and 128-bit shared loads, free of bank conflicts. An mma's 8
//   K-slots may be any 8 of the K-tile's k (A and B agreeing), and a warp's rows and columns
//   any of the block's (the outputs following): so thread q's slots q and q + 4 of K-step s are
//   k = 8 s + 2 q and 8 s + 2 q + 1 (adjacent: one 64-bit load where k is the stored-contiguous
//   axis, rows 40 words apart); where m (n) is contiguous, thread g's rows (columns) are
//   WM / 8 (WN / 8) adjacent ones (128-bit loads), the tile's 16-byte chunks XOR-swizzled by
//   k so that a warp's loads hit 32 distinct banks.
// MMA_3XTF32_RN sums KF K-steps at a time on the tensor cores from zero and adds each such sum
// to the running fp32 sums rounded to nearest (the tensor cores' own running sums truncate).
// ---------------------------------------------------------------------------------------------
#define TC_BK 32        // K-tile depth of gemm_tc
#define TC_KPAD 40      // words per stored row where k is contiguous (32 + 8: conflict-free)

__device__ __forceinline__ void cp_async16(void* smem, const void* global) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(global));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* global) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(global));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// x = hi + lo for 3xTF32, in three instructions (cvt.rna.tf32 alone takes four on sm_90): hi is
// x rounded to TF32 (nearest, ties away: the same bits as cvt.rna for finite x), lo = x - hi
// exactly, passed whole: the tensor cores read a TF32 operand's leading 19 bits, so lo enters
// truncated (an error of at most 2^-10 |lo| <= 2^-21 |x|, beside the 2^-22 |a||b| of the lo*lo
// product left out). A NaN x keeps its NaN in lo (hi may lose it); an infinite x gives hi = x,
// lo = NaN, so the product is NaN (the SIMT kernel's would be infinite).
__device__ __forceinline__ void split_tf32(float x, unsigned& hi, unsigned& lo) {
    hi = (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
    lo = __float_as_uint(x - __uint_as_float(hi));
}

// d = a @ b (+ d unless ZERO): one m16n8k8 TF32 product with fp32 sums
template <bool ZERO>
__device__ __forceinline__ void mma_tf32x(float (&d)[4], const unsigned (&a)[4],
                                          const unsigned (&b)[2]) {
    if constexpr (ZERO)
        asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
            : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
    else
        asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The swizzle of a tile whose rows are k and whose threads read CH adjacent 16-byte chunks:
// a chunk's low 3 bits XOR this, so that the 8 lanes of a 128-bit load phase (two g, four q)
// land in 8 distinct 4-bank groups
template <int CH> __device__ __forceinline__ int tc_swizzle(int k) {
    const int q = (k >> 1) & 3;
    return CH == 1 ? q << 1 : CH == 2 ? (q & 1) | ((q & 2) << 1) : q;
}

// One operand's K-tile (ROWS of the block's rows or columns by TC_BK of k) into shared memory.
// KC: k is the stored-contiguous axis (A untransposed, B transposed): stored [row][TC_KPAD];
// else [k][ROWS] with swizzled chunks. `ones`: the row index (== `limit`) that holds ones, or -1.
template <bool KC, int ROWS, int CH, int THREADS>
__device__ __forceinline__ void tc_load(float* tile, const float* __restrict__ X, long long ld,
                                        const long long* __restrict__ gather,
                                        const long long* krow, int r0, int limit, int ones,
                                        int k0, int k_begin, int k_end, bool vec, int tid) {
    constexpr int CHUNKS = ROWS * TC_BK / 4;
    static_assert(CHUNKS % THREADS == 0, "whole chunks per thread");
#pragma unroll
    for (int i = 0; i < CHUNKS / THREADS; ++i) {
        const int c = tid + i * THREADS;
        int r, k;  // the chunk's first (row, k); it runs along k (KC) or along rows
        float* dst;
        if constexpr (KC) {
            r = c / (TC_BK / 4);
            k = (c % (TC_BK / 4)) * 4;
            dst = tile + r * TC_KPAD + k;
        } else {
            k = c / (ROWS / 4);
            const int cc = c % (ROWS / 4);
            r = cc * 4;
            dst = tile + k * ROWS + ((cc ^ tc_swizzle<CH>(k)) * 4);
        }
        const int gr = r0 + r, gk = k0 + k;
        // the stored row of (row, k): rows are gathered when KC, ks otherwise
        if constexpr (KC) {
            const bool full = vec && gr < limit && gk + 3 < k_end;
            const float* src = X + (gather && gr < limit ? gather[gr] : (long long)gr) * ld + gk;
            if (full) {
                cp_async16(dst, src);
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (gk + e < k_end && gr < limit) cp_async4(dst + e, src + e);
                    else dst[e] = (gr == ones && gk + e < k_end) ? 1.0f : 0.0f;
                }
            }
        } else {
            const bool kin = gk < k_end;
            const long long row = !kin ? 0
                                  : krow ? krow[gk - k_begin]
                                  : gather ? gather[gk] : (long long)gk;
            const float* src = X + row * ld + gr;
            if (kin && vec && gr + 3 < limit) {
                cp_async16(dst, src);
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (kin && gr + e < limit) cp_async4(dst + e, src + e);
                    else dst[e] = (kin && gr + e == ones) ? 1.0f : 0.0f;
                }
            }
        }
    }
}

template <bool TA, bool TB, int BM, int BN, int WM, int WN, int STAGES, int KF, int MMA>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
gemm_tc(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
        const long long* __restrict__ gather_a, const long long* __restrict__ gather_b,
        int M, int N, int K, int lda, int ldb, int k_chunk,
        float* __restrict__ partial, int* __restrict__ counters, float* __restrict__ ones_out,
        int ones_row, int mode, const float* __restrict__ bias, const float* __restrict__ ymask,
        const float* __restrict__ dmask, int act, float slope, int batches, long long stride_a,
        long long stride_b, long long stride_c) {
    constexpr int WARPS_N = BN / WN, THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int TI = WM / 16, TJ = WN / 8;  // m16 and n8 tiles per warp
    constexpr int CHA = WM / 32, CHB = WN / 32;  // a thread's 16-byte chunks of a k (m, n rows)
    constexpr bool KCA = !TA, KCB = TB;  // k is the stored-contiguous axis
    constexpr int SA = KCA ? BM * TC_KPAD : TC_BK * BM, SB = KCB ? BN * TC_KPAD : TC_BK * BN;
    constexpr bool SPLIT = MMA == MMA_3XTF32 || MMA == MMA_3XTF32_RN;
    static_assert(MMA != MMA_SIMT && BM % WM == 0 && BN % WN == 0 && WM % 32 == 0 &&
                  WN % 32 == 0 && (KF == 1 || KF == 2), "a gemm_tc tile");
    extern __shared__ __align__(16) float tc_smem[];
    float* As = tc_smem;                 // STAGES x SA
    float* Bs = tc_smem + STAGES * SA;   // STAGES x SB
    __shared__ long long krow[GATHER_MAX];  // gathered stored rows by k (TA's A, or B)

    const int tid = threadIdx.x, lane = tid % 32, g = lane / 4, q = lane % 4;
    const int warp = tid / 32, wr = warp / WARPS_N, wc = warp % WARPS_N;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int Mp = M + (ones_out != nullptr && ones_row);
    const int Np = N + (ones_out != nullptr && !ones_row);
    const int split = batches > 1 ? 0 : blockIdx.z;
    if (batches > 1) {
        A += blockIdx.z * stride_a;
        B += blockIdx.z * stride_b;
        C += blockIdx.z * stride_c;
    }
    const int k_begin = split * k_chunk, k_end = min(K, k_begin + k_chunk);
    // 16-byte copies need 16-byte aligned rows
    const bool vec_a = ((unsigned long long)A % 16 == 0) && lda % 4 == 0;
    const bool vec_b = ((unsigned long long)B % 16 == 0) && ldb % 4 == 0;
    const long long* gather_k = TA ? gather_a : (!TB ? gather_b : nullptr);
    const bool staged = gather_k && k_end - k_begin <= GATHER_MAX;
    if (staged) {
        for (int kk = tid; kk < k_end - k_begin; kk += THREADS) krow[kk] = gather_k[k_begin + kk];
        __syncthreads();
    }
    const long long* krow_a = TA && staged ? krow : nullptr;
    const long long* krow_b = !TB && staged && !TA ? krow : nullptr;
    // A's ones row is op(A)'s row M; B's ones column is op(B)'s column N
    const int ones_a = ones_out != nullptr && ones_row ? M : -1;
    const int ones_b = ones_out != nullptr && !ones_row ? N : -1;
    const int tiles = k_end > k_begin ? (k_end - k_begin + TC_BK - 1) / TC_BK : 0;

    auto load = [&](int t) {  // K-tile t of this block's range into stage t % STAGES
        const int k0 = k_begin + t * TC_BK, stage = t % STAGES;
        // a gather read through krow (staged) passes no index of its own
        const long long* ga = TA && krow_a ? nullptr : gather_a;
        const long long* gb = TB || krow_b ? nullptr : gather_b;
        tc_load<KCA, BM, CHA, THREADS>(As + stage * SA, A, lda, ga, krow_a, m0, M, ones_a, k0,
                                       k_begin, k_end, vec_a, tid);
        tc_load<KCB, BN, CHB, THREADS>(Bs + stage * SB, B, ldb, gb, krow_b, n0, N, ones_b, k0,
                                       k_begin, k_end, vec_b, tid);
    };

    float acc[TI][TJ][4];
#pragma unroll
    for (int i = 0; i < TI; ++i)
#pragma unroll
        for (int j = 0; j < TJ; ++j)
#pragma unroll
            for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.0f;

    // This thread's fragments of 8-deep K-step s of a stage: its slots q, q + 4 are k = 8 s + 2 q
    // and 8 s + 2 q + 1. Its offsets into a stage are fixed (the swizzle of rows 8 s + 2 q + r
    // depends on q alone), so a K-step adds 8 s rows or words and the rest are immediates.
    int off_a[KCA ? 1 : CHA], off_b[KCB ? 1 : CHB];
    if constexpr (KCA) {
        off_a[0] = (wr * WM + g) * TC_KPAD + 2 * q;
    } else {  // rows wr WM + (WM / 8) g + 2 i + h, in chunks (wr WM) / 4 + CHA g + e
#pragma unroll
        for (int e = 0; e < CHA; ++e)
            off_a[e] = 2 * q * BM + (((wr * WM) / 4 + CHA * g + e) ^ tc_swizzle<CHA>(2 * q)) * 4;
    }
    if constexpr (KCB) {
        off_b[0] = (wc * WN + g) * TC_KPAD + 2 * q;
    } else {  // columns wc WN + (WN / 8) g + j, in chunks (wc WN) / 4 + CHB g + e
#pragma unroll
        for (int e = 0; e < CHB; ++e)
            off_b[e] = 2 * q * BN + (((wc * WN) / 4 + CHB * g + e) ^ tc_swizzle<CHB>(2 * q)) * 4;
    }
    auto fragments = [&](const float* as, const float* bs, int s, float (&x)[TI][4],
                         float (&y)[TJ][2]) {
        if constexpr (KCA) {
            const float* a = as + off_a[0] + 8 * s;
#pragma unroll
            for (int i = 0; i < TI; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float2 v = *reinterpret_cast<const float2*>(
                        a + (16 * i + 8 * h) * TC_KPAD);
                    x[i][h] = v.x;
                    x[i][2 + h] = v.y;
                }
        } else {
#pragma unroll
            for (int r = 0; r < 2; ++r)
#pragma unroll
                for (int e = 0; e < CHA; ++e) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        as + off_a[e] + (8 * s + r) * BM);
                    const float w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                    for (int u = 0; u < 4; ++u) {
                        const int j = 4 * e + u;  // = 2 i + h
                        x[j / 2][2 * r + j % 2] = w[u];
                    }
                }
        }
        if constexpr (KCB) {
            const float* b = bs + off_b[0] + 8 * s;
#pragma unroll
            for (int j = 0; j < TJ; ++j) {
                const float2 v = *reinterpret_cast<const float2*>(b + 8 * j * TC_KPAD);
                y[j][0] = v.x;
                y[j][1] = v.y;
            }
        } else {
#pragma unroll
            for (int r = 0; r < 2; ++r)
#pragma unroll
                for (int e = 0; e < CHB; ++e) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        bs + off_b[e] + (8 * s + r) * BN);
                    y[4 * e][r] = v.x;
                    y[4 * e + 1][r] = v.y;
                    y[4 * e + 2][r] = v.z;
                    y[4 * e + 3][r] = v.w;
                }
        }
    };
    float part[TI][TJ][4];  // MMA_3XTF32_RN: KF K-steps summed from zero
    // MMA_3XTF32_RN: `first` starts part from zero, `flush` adds it to acc (KF steps apart)
    auto multiply = [&](const float (&x)[TI][4], const float (&y)[TJ][2], bool first,
                        bool flush) {
        // split as they leave shared memory (split_tf32); TF32 alone rounds by cvt.rna
        unsigned ah[TI][4], al[TI][4], bh[TJ][2], bl[TJ][2];
#pragma unroll
        for (int i = 0; i < TI; ++i)
#pragma unroll
            for (int v = 0; v < 4; ++v) {
                if constexpr (SPLIT) split_tf32(x[i][v], ah[i][v], al[i][v]);
                else ah[i][v] = to_tf32(x[i][v]);
            }
#pragma unroll
        for (int j = 0; j < TJ; ++j)
#pragma unroll
            for (int v = 0; v < 2; ++v) {
                if constexpr (SPLIT) split_tf32(y[j][v], bh[j][v], bl[j][v]);
                else bh[j][v] = to_tf32(y[j][v]);
            }
        // the small cross terms first; each term over all tiles before the next, so that no
        // mma waits on the one before it
#pragma unroll
        for (int term = SPLIT ? 0 : 2; term < 3; ++term)
#pragma unroll
            for (int i = 0; i < TI; ++i)
#pragma unroll
                for (int j = 0; j < TJ; ++j) {
                    float (&d)[4] = MMA == MMA_3XTF32_RN ? part[i][j] : acc[i][j];
                    const unsigned (&a)[4] = term == 0 ? al[i] : ah[i];
                    const unsigned (&b)[2] = term == 1 ? bl[j] : bh[j];
                    if (MMA == MMA_3XTF32_RN && first && term == 0) mma_tf32x<true>(d, a, b);
                    else mma_tf32x<false>(d, a, b);
                }
        if constexpr (MMA == MMA_3XTF32_RN) {
            if (flush) {
#pragma unroll
                for (int i = 0; i < TI; ++i)
#pragma unroll
                    for (int j = 0; j < TJ; ++j)
#pragma unroll
                        for (int v = 0; v < 4; ++v) acc[i][j][v] += part[i][j][v];
            }
        }
    };

#pragma unroll
    for (int t = 0; t < STAGES - 1; ++t) {
        if (t < tiles) load(t);
        cp_async_commit();
    }
    for (int t = 0; t < tiles; ++t) {
        cp_async_wait<STAGES - 2>();  // tile t has landed (this thread's copies) ...
        __syncthreads();              // ... everyone's; and stage (t - 1) % STAGES is free
        if (t + STAGES - 1 < tiles) load(t + STAGES - 1);
        cp_async_commit();
        const float* as = As + (t % STAGES) * SA;
        const float* bs = Bs + (t % STAGES) * SB;
        // Fragments of step s + 1 are read while step s multiplies (a non-unrolled loop of two
        // steps: unrolled whole, the compiler hoists every step's reads and runs out of
        // registers)
        float xa[TI][4], ya[TJ][2], xb[TI][4], yb[TJ][2];
        fragments(as, bs, 0, xa, ya);
#pragma unroll 1
        for (int s = 0; s < TC_BK / 8; s += 2) {
            fragments(as, bs, s + 1, xb, yb);
            multiply(xa, ya, true, KF == 1);
            if (s + 2 < TC_BK / 8) fragments(as, bs, s + 2, xa, ya);
            multiply(xb, yb, KF == 1, true);
        }
    }
    cp_async_wait<0>();  // nothing left in flight (the last commits were empty)
    __syncthreads();      // and nobody reads a stage any more

    // The block's outputs go through shared memory (the stages' space), so that what leaves
    // for C (or the split-K slices) is written a row at a time, coalesced, whatever the
    // fragment order; output v of m16n8 tile (i, j) is block row row_of(i, v / 2), column
    // col_of(j, v % 2)
    constexpr int CS = BN + 4;  // words per row of the staged outputs
    static_assert(BM * CS <= STAGES * (SA + SB), "the outputs fit the stages' space");
    float* Cs = tc_smem;
    auto row_of = [&](int i, int h) {
        return wr * WM + (KCA ? 16 * i + 8 * h + g : (WM / 8) * g + 2 * i + h);
    };
    auto col_of = [&](int j, int u) {
        return wc * WN + (KCB ? 8 * j + 2 * q + u : (WN / 8) * (2 * q + u) + j);
    };
#pragma unroll
    for (int i = 0; i < TI; ++i)
#pragma unroll
        for (int j = 0; j < TJ; ++j)
#pragma unroll
            for (int v = 0; v < 4; ++v) Cs[row_of(i, v / 2) * CS + col_of(j, v % 2)] = acc[i][j][v];
    __syncthreads();
    const int rows = min(BM, Mp - m0), cols = min(BN, Np - n0);
    if (partial) {
        for (int e = tid; e < BM * BN; e += THREADS) {
            const int r = e / BN, c = e % BN;
            if (r < rows && c < cols)
                partial[((long long)blockIdx.z * Mp + m0 + r) * Np + n0 + c] = Cs[r * CS + c];
        }
        if (!counters) return;  // splitk_reduce, launched next, sums the slices
        __threadfence();  // this slice is visible before the count says so
        __syncthreads();
        __shared__ int is_last;
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        if (tid == 0) is_last = atomicAdd(&counters[tile], 1) == (int)gridDim.z - 1;
        __syncthreads();
        if (!is_last) return;
        __threadfence();
        for (int e = tid; e < BM * BN; e += THREADS) {  // the same elements as this thread wrote
            const int r = e / BN, c = e % BN;
            if (r >= rows || c >= cols) continue;
            float s = 0.0f;
            for (int z = 0; z < (int)gridDim.z; ++z)
                s += __ldcg(&partial[((long long)z * Mp + m0 + r) * Np + n0 + c]);  // from L2
            Cs[r * CS + c] = s;
        }
        if (tid == 0) counters[tile] = 0;  // ready for the next launch
    }
    for (int e = tid; e < BM * BN; e += THREADS) {
        const int r = e / BN, c = e % BN;
        if (r >= rows || c >= cols) continue;
        const int m = m0 + r, n = n0 + c;
        const float v = Cs[r * CS + c];
        if (m == M) ones_out[n] = v;
        else if (n == N) ones_out[m] = v;
        else C[(long long)m * N + n] = epilogue<float>(v, m, n, N, mode, bias, ymask, dmask, act,
                                                       slope);
    }
}

// The other way to finish a split-K product: one thread per output sums the slices in order.
template <typename T>
__global__ void splitk_reduce(const T* __restrict__ partial, int splits, int M, int N,
                              T* __restrict__ C, T* __restrict__ ones_out, int ones_row,
                              int mode, const T* __restrict__ bias, const T* __restrict__ ymask,
                              const T* __restrict__ dmask, int act, T slope) {
    const int Mp = M + (ones_out != nullptr && ones_row);
    const int Np = N + (ones_out != nullptr && !ones_row);
    const long long total = (long long)Mp * Np;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        T s = partial[e];
        for (int z = 1; z < splits; ++z) s += partial[z * total + e];
        const int m = (int)(e / Np), n = (int)(e % Np);
        if (m == M) ones_out[n] = s;
        else if (n == N) ones_out[m] = s;
        else C[(long long)m * N + n] = epilogue<T>(s, m, n, N, mode, bias, ymask, dmask, act,
                                                   slope);
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise work of the eager path.
// ---------------------------------------------------------------------------------------------
// A stack of G models (group.py) passes z (G, B, cols) as rows = G B and per_bias = B cols: each
// model adds its own bias row; a single model passes per_bias = rows cols.
template <typename T>
__global__ void bias_activation(T* z, const T* __restrict__ bias, T* out,  // out may be z
                                long long rows, int cols, long long per_bias, int act, T slope) {
    const long long total = rows * cols;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const T v = z[e] + bias[(e / per_bias) * cols + e % cols];
        z[e] = v;  // z + bias, as the NumPy backend leaves it
        out[e] = act_forward<T>(v, act, slope);
    }
}

// out = act(z) element-wise (out may be z): the epoch graph's forward for an activation whose
// backward reads z (GELU), whose product keeps z = x W^T + b and leaves the activation to this
template <typename T>
__global__ void activation_forward(const T* z, T* out, long long total, int act, T slope) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x)
        out[e] = act_forward<T>(z[e], act, slope);
}

template <typename T>
__global__ void activation_backward(const T* __restrict__ y, const T* dy, T* out,  // out may be dy
                                    long long total, int act, T slope) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x)
        out[e] = act_backward<T>(y[e], dy[e], act, slope);
}

// out[j] = sum_i a[i, j]: a (rows, cols); block (32, 8), each column summed in a fixed order.
// blockIdx.y picks one of a stack of such matrices (group.py's models: a (G, rows, cols)).
template <typename T>
__global__ void sum_rows(const T* __restrict__ a, T* __restrict__ out, int rows, int cols) {
    __shared__ T part[8][33];
    a += (long long)blockIdx.y * rows * cols;
    out += (long long)blockIdx.y * cols;
    const int j = blockIdx.x * 32 + threadIdx.x;
    T s = T(0);
    if (j < cols)
        for (int i = threadIdx.y; i < rows; i += 8) s += a[(long long)i * cols + j];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        for (int r = 1; r < 8; ++r) s += part[r][threadIdx.x];
        out[j] = s;
    }
}

// out[i] = source[index[i]] for rows of `cols` elements; an index outside the source's
// `source_rows` rows reads nothing (its row is 0) and sets *faults, which the host checks at its
// next sync (CupyBackend.to_host): a wrong index fails loudly instead of reading past the array
template <typename T>
__global__ void take_rows(const T* __restrict__ source, const long long* __restrict__ index,
                          T* __restrict__ out, long long rows, int cols, long long source_rows,
                          int* faults) {
    const long long total = rows * cols;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long row = index[e / cols];
        if (row < 0 || row >= source_rows) {
            *faults = 1;
            out[e] = T(0);
        } else {
            out[e] = source[row * cols + e % cols];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy over logits (rows, C), one thread per row, XENT_ROWS rows per block: per
// row the log-sum-exp loss m + log(s) - z[y] and whether argmax(z) == y; each block writes its
// sums (double) to parts[2 b], parts[2 b + 1], and sum_parts adds all parts in a fixed order, so
// the totals are deterministic. Optionally adds the output layer's bias to the logits first,
// writes the softmax to `probs`, and writes dL/dz = (softmax - onehot) * scale to `grad` (which
// may be the logits). Targets are read as targets[gather[r]] when gather is non-null.
// ---------------------------------------------------------------------------------------------
#define XENT_ROWS 128

// The block's rows' K sums (the loss, then the loss's tallies: a correct count, or squared and
// absolute errors), each summed in shared memory in a fixed order and written as
// parts[K block + k] (sum_parts adds the blocks, also in order).
template <int K>
__device__ void block_loss_parts(const double (&value)[K], double (*part)[XENT_ROWS],
                                 double* parts) {
    for (int k = 0; k < K; ++k) part[k][threadIdx.x] = value[k];
    __syncthreads();
    for (int half = XENT_ROWS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            for (int k = 0; k < K; ++k) part[k][threadIdx.x] += part[k][threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const int block = blockIdx.y * gridDim.x + blockIdx.x;  // a group's models in turn
        for (int k = 0; k < K; ++k) parts[K * block + k] = part[k][0];
    }
}

template <typename T>
__global__ void __launch_bounds__(XENT_ROWS)
softmax_xent(T* logits, const T* __restrict__ bias, const long long* __restrict__ targets,
             const long long* __restrict__ gather, T* __restrict__ probs, T* grad, int rows,
             int C, T scale, double smoothing, double* __restrict__ parts) {
    __shared__ double part[2][XENT_ROWS];
    double loss = 0.0, correct = 0.0;
    // A stack of G models (group.py): blockIdx.y is the model, `rows` its rows, `bias` (G, C);
    // its blocks' parts follow the previous model's, and sum_parts adds them per model.
    const long long model_rows = (long long)blockIdx.y * rows;
    logits += model_rows * C;
    if (bias) bias += (long long)blockIdx.y * C;
    if (!gather) targets += model_rows;
    if (probs) probs += model_rows * C;
    if (grad) grad += model_rows * C;
    const int r = blockIdx.x * XENT_ROWS + threadIdx.x;
    if (r < rows) {
        T* z = logits + (long long)r * C;
        if (bias)
            for (int c = 0; c < C; ++c) z[c] += bias[c];
        const long long y = targets[gather ? gather[r] : r];
        T m = z[0];
        int best = 0;
        for (int c = 1; c < C; ++c)
            if (z[c] > m) { m = z[c]; best = c; }  // the first maximum, as argmax
        T s = T(0);
        for (int c = 0; c < C; ++c) s += exp(z[c] - m);
        loss = (double)(m + log(s) - z[y]);
        if (smoothing != 0.0) {  // q = (1 - e) onehot + e / C: + e (z_y - sum_c z_c / C)
            double zsum = 0.0;
            for (int c = 0; c < C; ++c) zsum += (double)z[c];
            loss += smoothing * ((double)z[y] - zsum / C);
        }
        correct = (best == y);
        // dL/dz = (p - q) scale, as nn.SoftmaxCrossEntropy.backward rounds it
        const T off = (T)(smoothing / C * (double)scale);  // e / C * scale
        const T on = (T)(1.0 - smoothing + smoothing / C);  // q_y
        for (int c = 0; c < C; ++c) {
            const T p = exp(z[c] - m) / s;
            if (probs) probs[(long long)r * C + c] = p;
            if (grad) {
                T g;
                if (c == y) g = (p - on) * scale;
                else if (smoothing != 0.0) g = p * scale - off;
                else g = p * scale;
                grad[(long long)r * C + c] = g;
            }
        }
    }
    const double value[2] = {loss, correct};
    block_loss_parts<2>(value, part, parts);
}

// acc[k] += sum of parts[K i + k], i < n, in order, for the K = blockDim.x sums of a loss kernel
// (one block per model of a group: block g adds model g's n parts into acc[K g + k])
__global__ void sum_parts(const double* __restrict__ parts, int n, double* __restrict__ acc) {
    const int K = blockDim.x;
    parts += (long long)K * n * blockIdx.x;
    acc += K * blockIdx.x;
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += parts[K * i + threadIdx.x];
    acc[threadIdx.x] += s;
}

// dL/dz = (probs - onehot(y)) * scale, one thread per row
template <typename T>
__global__ void softmax_xent_grad(const T* __restrict__ probs, const long long* __restrict__ targets,
                                  T* __restrict__ grad, int rows, int C, T scale) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const long long y = targets[r];
    for (int c = 0; c < C; ++c) {
        T g = probs[(long long)r * C + c] * scale;
        if (c == y) g -= scale;
        grad[(long long)r * C + c] = g;
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizer updates over every parameter tensor in one launch: blockIdx.y picks the tensor,
// whose addresses come from device arrays. The learning rate is lrs[step] and Adam's count is
// t[0] + step + 1, both read from device buffers that the host refreshes before each replay.
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void sgd_update(const long long* __restrict__ params, const long long* __restrict__ grads,
                           const long long* __restrict__ velocities,
                           const long long* __restrict__ sizes, const double* __restrict__ lrs,
                           const double* __restrict__ mus, int step, T mu, T weight_decay,
                           int nesterov) {
    T* p = (T*)params[blockIdx.y];
    const T* gp = (const T*)grads[blockIdx.y];
    T* v = (T*)velocities[blockIdx.y];
    const long long n = sizes[blockIdx.y];
    const T lr = (T)lrs[step];
    if (mus) mu = (T)mus[step];  // momentum cycling: this step's mu
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        T g = gp[e];
        if (weight_decay != T(0)) g += weight_decay * p[e];  // the L2 penalty's gradient
        if (mu != T(0)) {
            T ve = v[e] * mu;
            ve += g;  // v <- mu v + g
            v[e] = ve;
            if (nesterov) g += mu * ve;  // look-ahead g + mu v
            else g = ve;
        }
        g *= lr;
        p[e] -= g;
    }
}

template <typename T>
__global__ void adam_update(const long long* __restrict__ params, const long long* __restrict__ grads,
                            const long long* __restrict__ firsts, const long long* __restrict__ seconds,
                            const long long* __restrict__ sizes, const double* __restrict__ lrs,
                            const long long* __restrict__ t0, int step, double beta1, double beta2,
                            T eps, double weight_decay, int decoupled) {
    T* p = (T*)params[blockIdx.y];
    const T* gp = (const T*)grads[blockIdx.y];
    T* m = (T*)firsts[blockIdx.y];
    T* v = (T*)seconds[blockIdx.y];
    const long long n = sizes[blockIdx.y];
    const double lr_d = lrs[step];
    const double t = (double)(t0[0] + step + 1);
    // lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), as the NumPy backend computes it
    const T step_size = (T)(lr_d / (1.0 - pow(beta1, t)));
    const T root_c2 = (T)(1.0 / sqrt(1.0 - pow(beta2, t)));
    const T b1 = (T)beta1, b2 = (T)beta2;
    const T omb1 = (T)(1.0 - beta1), omb2 = (T)(1.0 - beta2);
    const T shrink = (T)(1.0 - lr_d * weight_decay), wd = (T)weight_decay;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        T g = gp[e], pe = p[e];
        if (weight_decay != 0.0 && decoupled) pe *= shrink;  // AdamW: shrink p apart from g
        else if (weight_decay != 0.0) g += wd * pe;
        T me = m[e] * b1;
        me += g * omb1;
        T ve = v[e] * b2;
        ve += (g * g) * omb2;
        m[e] = me;
        v[e] = ve;
        T denom = sqrt(ve) * root_c2;
        denom += eps;
        pe -= (me / denom) * step_size;
        p[e] = pe;
    }
}

// ---------------------------------------------------------------------------------------------
// Sigmoid + binary cross-entropy over logits (rows, 1) against targets t in {0, 1} (type T),
// computed from the logit as nn.SigmoidBinaryCrossEntropy does:
//   loss = max(z, 0) - z t + log(1 + e^-|z|),  correct = [z > 0] == [t > 0.5],
//   dL/dz = (sigma(z) - t) * scale, sigma(z) = (1 + tanh(z/2)) / 2.
// Adds bias[0] first when bias is non-null; sums go to parts as softmax_xent's do.
// ---------------------------------------------------------------------------------------------
// Row r's logit of a one-output loss, the output layer's bias added where given, and its
// target, read as targets[gather[r]] when gather is given (sigmoid_bce, real_target)
template <typename T>
__device__ __forceinline__ void logit_and_target(const T* logits, const T* bias,
                                                 const T* targets, const long long* gather,
                                                 int r, T& z, T& t) {
    z = logits[r];
    if (bias) z += bias[0];
    t = targets[gather ? gather[r] : r];
}

template <typename T>
__global__ void __launch_bounds__(XENT_ROWS)
sigmoid_bce(T* logits, const T* __restrict__ bias, const T* __restrict__ targets,
            const long long* __restrict__ gather, T* grad, int rows, T scale,
            double* __restrict__ parts) {
    __shared__ double part[2][XENT_ROWS];
    double loss = 0.0, correct = 0.0;
    const int r = blockIdx.x * XENT_ROWS + threadIdx.x;
    if (r < rows) {
        T z, t;
        logit_and_target(logits, bias, targets, gather, r, z, t);
        const T a = log1p(exp(-fabs(z)));
        T term = a - z * t;
        term += z > T(0) ? z : T(0);
        loss = (double)term;
        correct = ((z > T(0)) == (t > T(0.5)));
        if (grad) {
            T g = act_forward<T>(z, ACT_SIGMOID, T(0)) - t;
            grad[r] = g * scale;
        }
    }
    const double value[2] = {loss, correct};
    block_loss_parts<2>(value, part, parts);
}

// The losses of a real-valued target (nn.MeanSquaredError, Huber, Poisson) on one output z per
// row, one thread per row: the row's loss, the squared and absolute errors of its prediction
// (its tallies, as parts[3 block + 1], [3 block + 2]: the loop's RMSE, R^2 and MAE) and, with grad,
// dL/dz * scale, each by its nn.py formula (r = prediction - t; the prediction is e^z for
// Poisson's log link, z otherwise). Targets are read as targets[gather[r]] when gather is given.
#define LOSS_MSE 0      // r^2;                                     dL/dz = 2 r
#define LOSS_HUBER 1    // m (|r| - m / 2), m = min(|r|, delta);    dL/dz = clip(r, -delta, delta)
#define LOSS_POISSON 2  // e^z - t z;                               dL/dz = e^z - t
template <typename T>
__global__ void __launch_bounds__(XENT_ROWS)
real_target(T* logits, const T* __restrict__ bias, const T* __restrict__ targets,
            const long long* __restrict__ gather, T* grad, int rows, T scale, int kind, T delta,
            double* __restrict__ parts) {
    __shared__ double part[3][XENT_ROWS];
    double loss = 0.0, squared = 0.0, absolute = 0.0;
    const int r = blockIdx.x * XENT_ROWS + threadIdx.x;
    if (r < rows) {
        T z, t;
        logit_and_target(logits, bias, targets, gather, r, z, t);
        const T prediction = kind == LOSS_POISSON ? exp(z) : z;
        const T res = prediction - t;
        T term, g;
        if (kind == LOSS_HUBER) {
            const T a = fabs(res), m = a < delta ? a : delta;
            term = m * (a - T(0.5) * m);
            g = res > delta ? delta : (res < -delta ? -delta : res);
        } else if (kind == LOSS_POISSON) {
            term = prediction - t * z;
            g = res;
        } else {
            term = res * res;
            g = T(2) * res;
        }
        loss = (double)term;
        squared = (double)(res * res);
        absolute = (double)fabs(res);
        if (grad) grad[r] = g * scale;
    }
    const double value[3] = {loss, squared, absolute};
    block_loss_parts<3>(value, part, parts);
}

// ---------------------------------------------------------------------------------------------
// Counter-based random numbers: Philox4x32-10 (Salmon et al. 2011; Random123), the same bits as
// seeding.philox. Key (seed, stream); counter (block, slot, step & 0xffffffff, step >> 32).
// ---------------------------------------------------------------------------------------------
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define STREAM_DROPOUT 0x44524F50u  // seeding.DROPOUT
#define STREAM_AUGMENT 0x41554753u  // seeding.AUGMENT

__device__ __forceinline__ uint4 philox4x32(uint4 c, unsigned k0, unsigned k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += PHILOX_W0; k1 += PHILOX_W1; }
        const unsigned hi0 = __umulhi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
        const unsigned hi1 = __umulhi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

__device__ __forceinline__ uint4 philox_block(unsigned seed, unsigned stream, unsigned slot,
                                              unsigned long long step, unsigned long long block) {
    return philox4x32(make_uint4((unsigned)block, slot, (unsigned)step, (unsigned)(step >> 32)),
                      seed, stream);
}

__device__ __forceinline__ unsigned word_of(uint4 b, int w) {
    return w == 0 ? b.x : w == 1 ? b.y : w == 2 ? b.z : b.w;
}

// word i % 4 of block i / 4: element i of seeding.random_bits
__device__ __forceinline__ unsigned philox_word(unsigned seed, unsigned stream, unsigned slot,
                                                unsigned long long step, unsigned long long i) {
    return word_of(philox_block(seed, stream, slot, step, i / 4), (int)(i % 4));
}

// out (4, n) = philox(counters (4, n), key): the known-answer test's view of the device function
__global__ void philox_kat(const unsigned* __restrict__ counters, unsigned k0, unsigned k1,
                           unsigned* __restrict__ out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const uint4 c = philox4x32(
        make_uint4(counters[i], counters[n + i], counters[2 * n + i], counters[3 * n + i]), k0, k1);
    out[i] = c.x; out[n + i] = c.y; out[2 * n + i] = c.z; out[3 * n + i] = c.w;
}

// The global step of a launch: step_base[0] (a device buffer the host sets before a graph
// replay; null: 0) plus the step's place in the graph.
__device__ __forceinline__ unsigned long long global_step(const long long* step_base, int offset) {
    return (unsigned long long)((step_base ? step_base[0] : 0) + offset);
}

// ---------------------------------------------------------------------------------------------
// Dropout on Linear layer `slot`'s input (rows, cols): m = [bits16 >= threshold] * scale, with
// element e = r cols + c reading half e % 2 (low first) of word e / 2 of the DROPOUT stream
// (seeding.dropout_keep). out = src[gather[r] or r] * m when src is non-null; mask (or null)
// keeps m for the backward pass. One thread per Philox block: 8 elements.
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void dropout(const T* __restrict__ src, const long long* __restrict__ gather,
                        T* __restrict__ out, T* __restrict__ mask, long long rows, int cols,
                        unsigned seed, int slot, const long long* __restrict__ step_base,
                        int step_offset, unsigned threshold, T scale) {
    const long long total = rows * cols, blocks = (total + 7) / 8;
    const unsigned long long step = global_step(step_base, step_offset);
    for (long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x; b < blocks;
         b += (long long)gridDim.x * blockDim.x) {
        const uint4 bits = philox_block(seed, STREAM_DROPOUT, slot, step, b);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const long long e = b * 8 + k;
            if (e >= total) break;
            const unsigned half = (word_of(bits, k / 2) >> (16 * (k % 2))) & 0xFFFFu;
            const T m = half >= threshold ? scale : T(0);
            if (mask) mask[e] = m;
            if (src) {
                const long long r = e / cols, c = e % cols;
                out[e] = src[(gather ? gather[r] : r) * cols + c] * m;
            }
        }
    }
}

// out = a * b element-wise (out may be a): the dropped activations x~ = y * m of a hidden layer
template <typename T>
__global__ void multiply(const T* a, const T* __restrict__ b, T* out, long long total) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x)
        out[e] = a[e] * b[e];
}

// ---------------------------------------------------------------------------------------------
// Max-norm on one weight matrix, stored as W^T (I, O): every row j of W (column j here) is
// scaled by c / max(|W_j|, c), the NumPy backend's sqrt, maximum and divide in that order.
// Block (32, 32): 32 units per block, neighbouring threads on neighbouring columns (coalesced),
// the I rows split over threadIdx.y and the partial sums added in a fixed order.
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void max_norm(T* __restrict__ wt, int I, int O, T limit) {
    __shared__ T part[32][33];
    __shared__ T factor[32];
    const int j = blockIdx.x * 32 + threadIdx.x;
    T s = T(0);
    if (j < O)
        for (int i = threadIdx.y; i < I; i += 32) {
            const T w = wt[(long long)i * O + j];
            s += w * w;
        }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0) {
        for (int r = 1; r < 32; ++r) s += part[r][threadIdx.x];
        T norm = sqrt(s);
        norm = norm > limit ? norm : limit;
        factor[threadIdx.x] = limit / norm;
    }
    __syncthreads();
    if (j < O) {
        const T f = factor[threadIdx.x];
        for (int i = threadIdx.y; i < I; i += 32) wt[(long long)i * O + j] *= f;
    }
}

// ---------------------------------------------------------------------------------------------
// Augmentation (data/augment.py states the same formulas for the NumPy backend). Per image b of
// a batch at global step t, from the AUGMENT stream, element b of each slot:
//   slot 0, 1: integer shifts dy, dx = (bits (2 S + 1)) >> 32 - S
//   slot 2, 3, 4: theta = rot (2u - 1), zoom = 1 + scl (2u - 1), phi = shr (2u - 1), u = bits 2^-32
//   slot 5, 6: elastic noise, element b H W + p: u (2u - 1) per pixel and axis
//   slot 7: the column zoom 1 + scl_c (2u - 1), only with per-axis zoom (slot 3 is the rows')
//   slot 8, 9: the elastic strength and width lo + span u, only when given as ranges
// Images whose label is in the narrow mask (bit y for label y) have rotation and shear limits
// times narrow_factor.
// The map sends output pixel p (row, col) to s = M (p - c) + c - t (+ elastic), M = zoom R H as
// in augment.py, then samples bilinearly with zeros outside the image.
// ---------------------------------------------------------------------------------------------
#define AUG_SHIFT_R 0
#define AUG_SHIFT_C 1
#define AUG_ROTATE 2
#define AUG_ZOOM 3
#define AUG_SHEAR 4
#define AUG_ELASTIC_R 5
#define AUG_ELASTIC_C 6
#define AUG_ZOOM_C 7
#define AUG_ELASTIC_ALPHA 8
#define AUG_ELASTIC_SIGMA 9
#define AUG_MAX_PIXELS 2048  // images up to 2048 pixels (45 x 45) (the elastic blur stages one in shared memory)

__device__ __forceinline__ double aug_uniform(unsigned seed, int slot, unsigned long long step,
                                              unsigned long long i) {
    return (double)philox_word(seed, STREAM_AUGMENT, slot, step, i) * 0x1p-32;
}

// lo + span u (u from the slot, element b), each operation rounded (no fused multiply-add:
// augment.py computes it in two NumPy operations)
__device__ __forceinline__ double aug_range(double lo, double span, unsigned seed, int slot,
                                            unsigned long long step, int b) {
    return __dadd_rn(lo, __dmul_rn(span, aug_uniform(seed, slot, step, b)));
}

// The sums of the whole Gaussian kernel exp(-(k / sigma)^2 / 2), k = -3n ... 3n, for n = H and
// n = W: the normalisers of augment.gaussian_blur_matrix
__device__ __forceinline__ double gauss_total(int n, double sigma) {
    double total = 0.0;
    for (int k = -3 * n; k <= 3 * n; ++k) {
        const double z = (double)k / sigma;
        total += exp(-0.5 * (z * z));
    }
    return total;
}

// G[i, j] of augment.gaussian_blur_matrix(n, sigma) given its normaliser, rounded to T
template <typename T>
__device__ __forceinline__ T gauss_weight(int i, int j, double sigma, double total) {
    const double z = (double)(i - j) / sigma;
    return (T)(exp(-0.5 * (z * z)) / total);
}

// Elastic displacement fields, one block per (image, axis): field (B, 2, H W) =
// alpha * G u G^T with u = 2 U - 1, G (H, H) and (W, W) Gaussian blur matrices (augment.py):
// precomputed (blur_h, blur_w) for one sigma, or built per image when sigma_span > 0. alpha
// (and sigma) are lo + span u per image when their span is > 0.
template <typename T>
__global__ void elastic_field(T* __restrict__ field, int H, int W, const T* __restrict__ blur_h,
                              const T* __restrict__ blur_w, double alpha, double alpha_span,
                              double sigma, double sigma_span, unsigned seed,
                              const long long* __restrict__ step_base, int step_offset) {
    __shared__ T u[AUG_MAX_PIXELS];
    __shared__ T g[AUG_MAX_PIXELS];
    __shared__ double totals[2];  // normalisers of the per-image G (H) and G (W)
    const int b = blockIdx.x, axis = blockIdx.y, n = H * W;
    const unsigned long long step = global_step(step_base, step_offset);
    const T strength = alpha_span > 0.0
        ? (T)aug_range(alpha, alpha_span, seed, AUG_ELASTIC_ALPHA, step, b) : (T)alpha;
    const bool own_blur = sigma_span > 0.0;
    const double sg = own_blur ? aug_range(sigma, sigma_span, seed, AUG_ELASTIC_SIGMA, step, b)
                               : sigma;
    if (own_blur && threadIdx.x < 2) totals[threadIdx.x] = gauss_total(threadIdx.x ? W : H, sg);
    for (int p = threadIdx.x; p < n; p += blockDim.x)
        u[p] = (T)(2.0 * aug_uniform(seed, AUG_ELASTIC_R + axis, step, (unsigned long long)b * n + p)
                   - 1.0);
    __syncthreads();
    for (int p = threadIdx.x; p < n; p += blockDim.x) {  // (G u)[r, c] = sum_k G[r, k] u[k, c]
        const int r = p / W, c = p % W;
        T s = T(0);
        if (own_blur)
            for (int k = 0; k < H; ++k) s += gauss_weight<T>(r, k, sg, totals[0]) * u[k * W + c];
        else
            for (int k = 0; k < H; ++k) s += blur_h[r * H + k] * u[k * W + c];
        g[p] = s;
    }
    __syncthreads();
    T* out = field + ((long long)b * 2 + axis) * n;
    for (int p = threadIdx.x; p < n; p += blockDim.x) {  // ((G u) G^T)[r, c]
        const int r = p / W, c = p % W;
        T s = T(0);
        if (own_blur)
            for (int k = 0; k < W; ++k) s += g[r * W + k] * gauss_weight<T>(c, k, sg, totals[1]);
        else
            for (int k = 0; k < W; ++k) s += g[r * W + k] * blur_w[c * W + k];
        out[p] = s * strength;
    }
}

// out (B, H W) = the batch's images X[gather[b]], distorted. One block per image; thread 0
// draws its parameters. field: elastic displacements (B, 2, H W) or null. affine = 0: the
// exact integer shift only. scale is the rows' zoom limit (both axes' unless per_axis; then
// scale_c is the columns'). labels (N,) class indices read through gather, or null: images
// whose label y has bit y of narrow_mask set get rotate and shear times narrow_factor.
template <typename T>
__global__ void augment(const T* __restrict__ X, const long long* __restrict__ gather,
                        T* __restrict__ out, int H, int W, int shift, double rotate, double scale,
                        double shear, double scale_c, int per_axis,
                        const long long* __restrict__ labels, unsigned narrow_mask,
                        double narrow_factor, int affine, const T* __restrict__ field,
                        unsigned seed, const long long* __restrict__ step_base, int step_offset) {
    __shared__ T m[4];
    __shared__ T origin[2];
    __shared__ int offs[2];
    const int b = blockIdx.x, n = H * W;
    const unsigned long long step = global_step(step_base, step_offset);
    if (threadIdx.x == 0) {
        const unsigned long long span = 2ull * shift + 1;
        const int dy = (int)((philox_word(seed, STREAM_AUGMENT, AUG_SHIFT_R, step, b) * span) >> 32) - shift;
        const int dx = (int)((philox_word(seed, STREAM_AUGMENT, AUG_SHIFT_C, step, b) * span) >> 32) - shift;
        offs[0] = dy; offs[1] = dx;
        double rot = rotate, shr = shear;
        if (labels) {
            const long long y = labels[gather ? gather[b] : b];
            if (y >= 0 && y < 32 && ((narrow_mask >> y) & 1u)) {
                rot = rotate * narrow_factor;
                shr = shear * narrow_factor;
            }
        }
        const double theta = rot * (2.0 * aug_uniform(seed, AUG_ROTATE, step, b) - 1.0);
        const double zoom = 1.0 + scale * (2.0 * aug_uniform(seed, AUG_ZOOM, step, b) - 1.0);
        const double zoom_c = per_axis
            ? 1.0 + scale_c * (2.0 * aug_uniform(seed, AUG_ZOOM_C, step, b) - 1.0) : zoom;
        const double phi = shr * (2.0 * aug_uniform(seed, AUG_SHEAR, step, b) - 1.0);
        // M = R(theta) diag(zoom, zoom_c) H(phi), as augment.py
        const double cs = cos(theta) * zoom, sn = sin(theta) * zoom, tn = tan(phi);
        const double cc = cos(theta) * zoom_c, sc = sin(theta) * zoom_c;
        m[0] = (T)cs; m[1] = (T)(cs * tn - sc); m[2] = (T)sn; m[3] = (T)(sn * tn + cc);
        origin[0] = (T)((H - 1) / 2.0 - dy);
        origin[1] = (T)((W - 1) / 2.0 - dx);
    }
    __syncthreads();
    const T* img = X + (gather ? gather[b] : b) * (long long)n;
    T* dst = out + (long long)b * n;
    auto pixel = [&](int r, int c) -> T {  // zero outside the image
        return (r >= 0 && r < H && c >= 0 && c < W) ? img[r * W + c] : T(0);
    };
    for (int p = threadIdx.x; p < n; p += blockDim.x) {
        const int r = p / W, c = p % W;
        if (!affine) {
            dst[p] = pixel(r - offs[0], c - offs[1]);
            continue;
        }
        const T dr = (T)(r - (H - 1) / 2.0), dc = (T)(c - (W - 1) / 2.0);
        // s = M (p - c) + c - t, each product rounded before the sum (as NumPy does)
        T fr = mul_rn(m[0], dr);
        fr = add_rn(fr, mul_rn(m[1], dc));
        fr = add_rn(fr, origin[0]);
        T fc = mul_rn(m[2], dr);
        fc = add_rn(fc, mul_rn(m[3], dc));
        fc = add_rn(fc, origin[1]);
        if (field) {
            fr = add_rn(fr, field[((long long)b * 2) * n + p]);
            fc = add_rn(fc, field[((long long)b * 2 + 1) * n + p]);
        }
        fr = fr < T(-1) ? T(-1) : (fr > T(H) ? T(H) : fr);
        fc = fc < T(-1) ? T(-1) : (fc > T(W) ? T(W) : fc);
        const T r0 = floor(fr), c0 = floor(fc);
        const T tr = fr - r0, tc = fc - c0;
        const int ri = (int)r0, ci = (int)c0;
        const T g00 = pixel(ri, ci), g01 = pixel(ri, ci + 1);
        const T g10 = pixel(ri + 1, ci), g11 = pixel(ri + 1, ci + 1);
        // top = g00 + tc (g01 - g00); bottom = g10 + tc (g11 - g10); top + tr (bottom - top)
        const T top = add_rn(g00, mul_rn(g01 - g00, tc));
        const T bottom = add_rn(g10, mul_rn(g11 - g10, tc));
        dst[p] = add_rn(top, mul_rn(bottom - top, tr));
    }
}
