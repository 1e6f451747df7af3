"""Seconds NVRTC takes to build each of the GPU path's product kernels, in this checkout and at a
git revision, side by side: what a cold start (an empty kernel cache) waits for. Needs no GPU,
only the NVRTC wheel of the test extra (pip install nvidia-cuda-nvrtc-cu12).

    python benchmarks/kernel_compile.py [--base main] [--arch sm_90] [--repeats 1]

Each kernel is built alone, from the whole kernels.cu as CuPy builds it (one module per
instantiation, `--std=c++17`), to a cubin for `--arch` (ptxas included; the device machines
are sm_90), the two sources in turn. The float32 kernels a MNIST recipe's epoch graph compiles:
every tile of `gemm` (the tuner times them all) for the three products' transposes, and
`gemm_tc`'s where kernels.cu has it. On the device each kernel compiles in its own process,
side by side, so a cold start waits for about the slowest one plus CuPy's import.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the NVRTC binding tests/test_kernels_compile.py uses

import test_kernels_compile as nvrtc  # noqa: E402

KERNELS = ROOT / "mlptrain" / "backend" / "cuda" / "kernels.cu"


def product_kernels(source: str) -> list[str]:
    """float32's gemm (SIMT) and gemm_tc instantiations of `source`, each tile and transpose."""
    names = nvrtc._instantiations(source)
    simt = [n for n in names if n.startswith("gemm<float") and n.count(",") == 7]
    shipped = f",{nvrtc._gemm_constant('TC_KF')}," if "gemm_tc" in source else ""
    tc = [n for n in names if n.startswith("gemm_tc<") and shipped in n and n.endswith(",4>")]
    return simt + tc  # gemm_tc's 3xTF32 (MMA 4: fp32's default), the shipped KF


def seconds(lib, source: str, name: str) -> float:
    start = time.perf_counter()
    status, log = nvrtc._compile(lib, source, [name])
    if status:
        raise SystemExit(f"{name} does not compile:\n{log[:2000]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="the git revision to compare with")
    parser.add_argument("--arch", default="sm_90", help="NVRTC's --gpu-architecture")
    parser.add_argument("--repeats", type=int, default=1, help="builds of each; median shown")
    args = parser.parse_args(argv)
    nvrtc.ARCH = args.arch
    try:
        lib = nvrtc._nvrtc()
    except BaseException as missing:  # pytest's Skipped, outside pytest: the wheel is absent
        raise SystemExit(str(missing)) from None
    base = subprocess.run(["git", "show", f"{args.base}:{KERNELS.relative_to(ROOT)}"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    here = KERNELS.read_text()
    rows, totals = [], [0.0, 0.0]
    for name in product_kernels(here):
        pair = []
        for i, source in enumerate((base, here)):
            if i == 0 and name not in product_kernels(base):
                pair.append(None)
                continue
            t = statistics.median(seconds(lib, source, name) for _ in range(args.repeats))
            totals[i] += t
            pair.append(t)
        rows.append((name, *pair))
        print(f"  {name}: " + " / ".join("-" if t is None else f"{t:.2f} s" for t in pair),
              file=sys.stderr, flush=True)
    print(f"| kernel ({args.arch}) | {args.base} | this checkout |\n| --- | --- | --- |")
    for name, old, new in rows:
        print(f"| `{name}` | {'-' if old is None else f'{old:.2f}'} | {new:.2f} |")
    print(f"| **total** | **{totals[0]:.1f}** | **{totals[1]:.1f}** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
