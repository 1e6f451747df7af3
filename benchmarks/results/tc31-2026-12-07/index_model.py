"""NumPy model of gemm_tc's index arithmetic (kernels.cu): the cp.async loader with its element
fallback, ones row and column, the swizzle, the fragment reads, the m16n8k8 operand and result
layouts and the staged outputs, checked against A @ B in float64 for every transpose and tile
(exact products: it checks where each value goes, not rounding).   python index_model.py"""
import numpy as np
BK, KPAD = 32, 40

def sw(CH, k):
    q = (k >> 1) & 3
    return q << 1 if CH == 1 else ((q & 1) | ((q & 2) << 1)) if CH == 2 else q

def load(tile, KC, ROWS, CH, THREADS, X, ld, r0, limit, ones, k0, k_end, trans_store):
    # X: stored matrix (2-d numpy); element (row, k) = X[row, k] if KC else X[k, row]
    chunks = ROWS * BK // 4
    for tid in range(THREADS):
        for i in range(chunks // THREADS):
            c = tid + i * THREADS
            if KC:
                r = c // (BK // 4); k = (c % (BK // 4)) * 4
                dst = r * KPAD + k
            else:
                k = c // (ROWS // 4); cc = c % (ROWS // 4); r = cc * 4
                dst = k * ROWS + ((cc ^ sw(CH, k)) * 4)
            gr, gk = r0 + r, k0 + k
            for e in range(4):
                if KC:
                    rr, kk = gr, gk + e
                else:
                    rr, kk = gr + e, gk
                if kk < k_end and rr < limit:
                    v = X[rr, kk] if KC else X[kk, rr]
                else:
                    v = 1.0 if (rr == ones and kk < k_end) else 0.0
                assert np.isnan(tile[dst + e]) or True
                tile[dst + e] = v

def run(TA, TB, BM, BN, WM, WN, M, N, K, ones_row=None, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)); B = rng.standard_normal((K, N))
    Mp = M + (ones_row is True); Np = N + (ones_row is False)
    Aop = np.vstack([A, np.ones((1, K))]) if ones_row is True else A
    Bop = np.hstack([B, np.ones((K, 1))]) if ones_row is False else B
    want = Aop @ Bop
    # stored forms: KC A is (M, K) [row m, k]; TA stores (K, M): our X accessor uses X[row,k] for KC, X[k,row] else
    XA = A if not TA else A.T.copy()
    XB = B.T.copy() if TB else B  # TB: stored (N, K) => KC rows n
    KCA, KCB = not TA, TB
    WARPS_N = BN // WN; THREADS = (BM // WM) * WARPS_N * 32
    TI, TJ, CHA, CHB = WM // 16, WN // 8, WM // 32, WN // 32
    SA = BM * KPAD if KCA else BK * BM; SB = BN * KPAD if KCB else BK * BN
    out = np.full((Mp, Np), np.nan)
    for by in range(-(-Mp // BM)):
        for bx in range(-(-Np // BN)):
            m0, n0 = by * BM, bx * BN
            acc = np.zeros((THREADS, TI, TJ, 4))
            for t in range(-(-K // BK)):
                k0 = t * BK
                As = np.full(SA, np.nan); Bs = np.full(SB, np.nan)
                # accessor: KC -> X[row, k] ; else X[k, row]
                load(As, KCA, BM, CHA, THREADS, (XA if KCA else XA), None, m0, M, M if ones_row is True else -1, k0, K, None)
                load(Bs, KCB, BN, CHB, THREADS, XB, None, n0, N, N if ones_row is False else -1, k0, K, None)
                for s in range(BK // 8):
                    for warp in range(THREADS // 32):
                        wr, wc = warp // WARPS_N, warp % WARPS_N
                        X = np.zeros((32, TI, 4)); Y = np.zeros((32, TJ, 2))
                        for lane in range(32):
                            g, q = lane // 4, lane % 4
                            kk0 = 8 * s + 2 * q
                            if KCA:
                                for i in range(TI):
                                    for h in range(2):
                                        base = (wr * WM + 16 * i + 8 * h + g) * KPAD + kk0
                                        X[lane, i, h] = As[base]; X[lane, i, 2 + h] = As[base + 1]
                            else:
                                for r in range(2):
                                    for e in range(CHA):
                                        c = (wr * WM) // 4 + CHA * g + e
                                        base = (kk0 + r) * BM + ((c ^ sw(CHA, kk0 + r)) * 4)
                                        for u in range(4):
                                            j = 4 * e + u
                                            X[lane, j // 2, 2 * r + j % 2] = As[base + u]
                            if KCB:
                                for j in range(TJ):
                                    base = (wc * WN + 8 * j + g) * KPAD + kk0
                                    Y[lane, j, 0] = Bs[base]; Y[lane, j, 1] = Bs[base + 1]
                            else:
                                for r in range(2):
                                    for e in range(CHB):
                                        c = (wc * WN) // 4 + CHB * g + e
                                        base = (kk0 + r) * BN + ((c ^ sw(CHB, kk0 + r)) * 4)
                                        for u in range(4):
                                            Y[lane, 4 * e + u, r] = Bs[base + u]
                        assert not np.isnan(X).any() and not np.isnan(Y).any()
                        for i in range(TI):
                            Al = np.zeros((16, 8))
                            for lane in range(32):
                                g, q = lane // 4, lane % 4
                                Al[g, q], Al[g + 8, q], Al[g, q + 4], Al[g + 8, q + 4] = X[lane, i]
                            for j in range(TJ):
                                Bl = np.zeros((8, 8))
                                for lane in range(32):
                                    g, q = lane // 4, lane % 4
                                    Bl[q, g], Bl[q + 4, g] = Y[lane, j]
                                Cl = Al @ Bl
                                for lane in range(32):
                                    g, q = lane // 4, lane % 4
                                    acc[warp * 32 + lane, i, j] += [Cl[g, 2*q], Cl[g, 2*q+1], Cl[g+8, 2*q], Cl[g+8, 2*q+1]]
            CS = BN + 4
            Cs = np.full((BM, CS), np.nan)
            for tid in range(THREADS):
                lane, warp = tid % 32, tid // 32; g, q = lane // 4, lane % 4
                wr, wc = warp // WARPS_N, warp % WARPS_N
                for i in range(TI):
                    for j in range(TJ):
                        for v in range(4):
                            h, u = v // 2, v % 2
                            row = wr * WM + (16 * i + 8 * h + g if KCA else (WM // 8) * g + 2 * i + h)
                            col = wc * WN + (8 * j + 2 * q + u if KCB else (WN // 8) * (2 * q + u) + j)
                            assert np.isnan(Cs[row, col]), "written twice"
                            Cs[row, col] = acc[tid, i, j, v]
            assert not np.isnan(Cs[:, :BN]).any()
            rows, cols = min(BM, Mp - m0), min(BN, Np - n0)
            out[m0:m0 + rows, n0:n0 + cols] = Cs[:rows, :cols]
    err = np.abs(out - want).max()
    return err

for cfg in [(False, True, 64, 64, 32, 32), (True, False, 64, 64, 32, 32), (False, False, 64, 64, 32, 32),
            (True, True, 64, 64, 32, 32), (False, False, 64, 128, 64, 32), (True, False, 128, 64, 64, 32),
            (False, True, 128, 128, 64, 32), (True, False, 128, 128, 64, 32)]:
    for (M, N, K, ones) in [(70, 45, 37, None), (64, 64, 64, True), (37, 90, 33, False)]:
        e = run(*cfg, M, N, K, ones)
        print(cfg, (M, N, K, ones), "max err %.2e" % e)
        assert e < 1e-9
print("all ok")
