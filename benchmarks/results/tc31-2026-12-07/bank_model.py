"""Bank conflicts of gemm_tc's fragment loads (kernels.cu), by the address arithmetic: the most
accesses one bank serves in one phase of a load (1 = conflict-free); 64-bit loads are served in
phases of 16 lanes, 128-bit loads in phases of 8.   python bank_model.py"""
from pathlib import Path

exec(Path(__file__).with_name("index_model.py").read_text().split("def load(")[0])  # sw, BK, KPAD
def degree(addrs_words, width):  # addrs per lane (word index), width words per access
    lanes_per_phase = 32 // width if width > 1 else 32
    worst = 1
    for p in range(0, 32, lanes_per_phase):
        banks = {}
        for a in addrs_words[p:p + lanes_per_phase]:
            for w in range(width):
                b = (a + w) % 32
                banks.setdefault(b, set()).add((a + w))
        worst = max(worst, max(len(v) for v in banks.values()))
    return worst
for (TA, TB, BM, BN, WM, WN) in [(False, True, 64, 64, 32, 32), (True, False, 128, 128, 64, 32), (False, False, 128, 128, 64, 32), (True, False, 64, 128, 64, 32)]:
    KCA, KCB = not TA, TB
    CHA, CHB, TI, TJ = WM // 32, WN // 32, WM // 16, WN // 8
    res = []
    for wr in range(BM // WM):
        for s in range(4):
            if KCA:
                for i in range(TI):
                    for h in range(2):
                        res.append(("A64", degree([(wr*WM+16*i+8*h+l//4)*KPAD + 8*s+2*(l%4) for l in range(32)], 2)))
            else:
                for r in range(2):
                    for e in range(CHA):
                        ad = []
                        for l in range(32):
                            g, q = l // 4, l % 4; k0 = 8*s+2*q
                            c = (wr*WM)//4 + CHA*g + e
                            ad.append((k0+r)*BM + ((c ^ sw(CHA, k0+r))*4))
                        res.append(("A128", degree(ad, 4)))
    for wc in range(BN // WN):
        for s in range(4):
            if KCB:
                for j in range(TJ):
                    res.append(("B64", degree([(wc*WN+8*j+l//4)*KPAD + 8*s+2*(l%4) for l in range(32)], 2)))
            else:
                for r in range(2):
                    for e in range(CHB):
                        ad = []
                        for l in range(32):
                            g, q = l // 4, l % 4; k0 = 8*s+2*q
                            c = (wc*WN)//4 + CHB*g + e
                            ad.append((k0+r)*BN + ((c ^ sw(CHB, k0+r))*4))
                        res.append(("B128", degree(ad, 4)))
    print((TA, TB, BM, BN, WM, WN), {k: max(d for kk, d in res if kk == k) for k in set(k for k, _ in res)})
