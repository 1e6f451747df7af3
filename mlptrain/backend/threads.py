"""NumPy's BLAS threads: how many the training step's products run on, chosen by timing them.

OpenBLAS starts one thread per core. On an idle machine a second thread speeds a product up;
on a shared one, where other processes hold the cores, its threads wait on each other and the
same step runs 1.5-3x slower than on one thread (issue 32: `fit configs/mnist.toml` on a busy
2-core machine took 4.8-7.5 s an epoch at 2 threads, 2.2-2.6 s at 1). So an eager CPU run times
its own step (forward, loss, backward: every product) at each candidate count before its first
step, round-robin so that the machine's load weighs on every count alike, and keeps the
fastest for the run; afterwards the BLAS gets its own count back.

The count moves float32 rounding (OpenBLAS cuts a product into blocks per thread: measured on
784-128 products, 1 and 2 threads differ in the last bits), so a run records its choice (the
checkpoint's product_plans) and a resume reuses it, as the GPU does with its timed tiles; two
separate runs round alike only with MLPTRAIN_CPU_TUNE=0 (the BLAS's own count, untimed) or a
thread count fixed in the environment (OMP_NUM_THREADS, ...), which is always respected.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from typing import Callable

TUNE_VARIABLE = "MLPTRAIN_CPU_TUNE"  # "0": keep the BLAS's own thread count, untimed
# what fixes a BLAS's threads from outside (a sweep's workers get them all): never overridden
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
ROUNDS = 3  # rounds of timing; each runs every candidate count in turn for a WINDOW
# seconds (at least MIN_CALLS steps), and a count's time is its windows' mean step, not its
# median: on a busy machine most steps of two threads run fast, but every few steps one of
# them waits out another process's time slice (measured beside two busy processes on 2 cores:
# a median of 0.76 ms a step at 2 threads, 1.12 ms at 1, but a mean of 4.0 ms against 1.6)
WINDOW = 0.1
MIN_CALLS = 3
# seconds: a step this quick has no product big enough to share out (xor, wine, diabetes:
# 22-33 us). 784-128-10 at B = 64 (~150 us at 2 threads) shares its two 6.4 MFLOP products, and
# beside one busy process its 2-thread steps averaged 0.6-4.5 ms against 0.19 ms at one thread,
# though their fastest were quicker: it must be timed (issue 32; 2e-4 let it through untimed)
SMALL_STEP = 6e-5


def numpy_blas():
    """threadpoolctl's controller of NumPy's own BLAS (not the one SciPy's wheels carry, which
    the backend holds to one thread), or None where threadpoolctl finds none."""
    from threadpoolctl import ThreadpoolController

    spec = importlib.util.find_spec("scipy")  # where SciPy's libraries would be: not imported
    scipy_dir = os.path.dirname(spec.origin) if spec and spec.origin else None
    for controller in ThreadpoolController().select(user_api="blas").lib_controllers:
        if scipy_dir is None or not controller.filepath.startswith(
                (scipy_dir + ".libs", scipy_dir + os.sep)):
            return controller
    return None


def candidates(cores: int) -> list[int]:
    """The counts worth timing: 1, the powers of two below the cores, and all the cores."""
    counts, n = {1, cores}, 2
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def fixed_by(environ=os.environ) -> str:
    """Why the count is not to be timed ("" when it is): the tuning is off, or the environment
    sets it."""
    if environ.get(TUNE_VARIABLE, "1") == "0":
        return f"{TUNE_VARIABLE}=0"
    for name in THREAD_VARIABLES:
        if environ.get(name):
            return f"{name}={environ[name]}"
    return ""


def time_counts(trial: Callable[[], None], counts: list[int],
                set_threads: Callable[[int], None]) -> dict[int, float]:
    """Seconds per call of `trial` at each thread count: the mean call of a window, the
    median over ROUNDS rounds, each running every count in turn (round-robin, so that the
    machine's load weighs on every count alike)."""
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(ROUNDS):
        for n in counts:
            set_threads(n)
            trial()  # the count's threads wake up; the caches refill
            begin, calls = time.perf_counter(), 0
            while calls < MIN_CALLS or time.perf_counter() - begin < WINDOW:
                trial()
                calls += 1
            seconds[n].append((time.perf_counter() - begin) / calls)
    return {n: statistics.median(s) for n, s in seconds.items()}


def quick(trial: Callable[[], None]) -> bool:
    """Whether a step is too quick for its products to be shared among threads (timing it
    would cost more than it could gain): the faster of two calls under SMALL_STEP."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        trial()
        times.append(time.perf_counter() - start)
    return min(times) < SMALL_STEP
