"""The one Python face of kernels.cu: its constants, and compiling and loading its kernels.

Constants the kernels define with `#define` (rows per loss block, activation and epilogue ids,
stream ids, ...) are read from the source here, so each is written once, in kernels.cu.

Kernels compile on first use, each template instantiation as its own small module, only those a
run asks for, several at once in worker processes. CuPy caches every compiled module on
disk (CUPY_CACHE_DIR, by default ~/.cupy/kernel_cache), so a second run only loads them. A marker
file beside CuPy's cache says whether a kernel was compiled before; when some were not, the
caller's `on_event` hears KernelsCompiling before and KernelsCompiled (with the seconds) after,
so the user sees why the first epoch waits.
"""

from __future__ import annotations

import hashlib
import os
import time
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cupy as cp

from mlptrain.backend.cuda.dispatch import (  # noqa: F401 - re-exported for the backend
    ACT_IDS, CONSTANTS, ctype, typed)
from mlptrain.backend.cuda.dispatch import TEXT as _TEXT
from mlptrain.backend.events import KernelsCompiled, KernelsCompiling

OPTIONS = ("--std=c++17",)
XENT_ROWS = CONSTANTS["XENT_ROWS"]  # rows per block of the loss kernels
GATHER_MAX = CONSTANTS["GATHER_MAX"]
EPI_STORE, EPI_BIAS_ACT, EPI_ACT_GRAD = (CONSTANTS[k] for k in ("EPI_STORE", "EPI_BIAS_ACT",
                                                                 "EPI_ACT_GRAD"))
THREADS = 256  # threads per block of the element-wise kernels


def _cache_dir() -> Path:
    return Path(os.environ.get("CUPY_CACHE_DIR", Path.home() / ".cupy" / "kernel_cache"))


def _marker(name: str) -> Path:
    """A file that exists once `name` was compiled here for this source, CuPy and device."""
    arch = cp.cuda.Device().compute_capability
    key = "\0".join((_TEXT, name, cp.__version__, arch, *OPTIONS))
    return _cache_dir() / f"mlptrain-{hashlib.sha1(key.encode()).hexdigest()}"


class Kernels:
    """Compiled kernel functions by instantiation name, compiled (or loaded) on demand."""

    def __init__(self, on_event=None):
        self.on_event = on_event or (lambda event: None)
        self._functions: dict[str, object] = {}

    def __call__(self, name: str):
        """The function for one instantiation (`gemm<float,...>`, `sum_parts`), loaded now."""
        f = self._functions.get(name)
        if f is None:
            self.prepare([name])
            f = self._functions[name]
        return f

    def kernel(self, name: str, dtype):
        return self(typed(name, dtype))

    def prepare(self, names) -> None:
        """Loads every named kernel, compiling in parallel those never compiled here; call it
        before a graph capture, so nothing loads lazily inside one."""
        missing = [n for n in dict.fromkeys(names) if n not in self._functions]
        if not missing:
            return
        fresh = [n for n in missing if not _marker(n).exists()]
        if fresh:
            self.on_event(KernelsCompiling(len(fresh)))
        start = time.perf_counter()
        if len(fresh) > 1:  # compile in fresh processes, one per kernel, side by side
            workers = min(len(fresh), os.cpu_count() or 1)
            try:
                with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                    list(pool.map(_compile, fresh))  # each lands in CuPy's disk cache
            except (BrokenProcessPool, OSError):
                pass  # workers could not start (a script read from stdin, which spawn cannot
                # run again; no semaphores): _load compiles them here, one after another
        for name in missing:
            self._functions[name] = _load(name)  # from the cache when compiled above
        if fresh:
            for name in fresh:
                _marker(name).parent.mkdir(parents=True, exist_ok=True)
                _marker(name).touch()
            self.on_event(KernelsCompiled(len(fresh), time.perf_counter() - start))


def _compile(name: str) -> None:
    """Compiles one kernel into CuPy's disk cache (run in a worker process)."""
    cp.RawModule(code=_TEXT, options=OPTIONS, name_expressions=[name]).get_function(name)


def _load(name: str):
    module = cp.RawModule(code=_TEXT, options=OPTIONS, name_expressions=[name])
    f = module.get_function(name)
    f.max_threads_per_block  # noqa: B018 - reading an attribute forces the load
    if name.startswith("gemm_tc<"):  # its stages take more than the default 48 KB of shared
        f.max_dynamic_shared_size_bytes = _shared_optin() - f.shared_size_bytes
    return f


def _shared_optin() -> int:
    """The shared memory a block may take once its kernel opts in (227 KB on an H100)."""
    device = cp.cuda.Device()
    optin = device.attributes.get("MaxSharedMemoryPerBlockOptin")
    if optin is None:  # cudaDevAttrMaxSharedMemoryPerBlockOptin
        optin = cp.cuda.runtime.deviceGetAttribute(97, device.id)
    return int(optin)
