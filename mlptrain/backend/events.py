"""What a backend reports while it sets up (the loop passes these on; the CLI renders them).
No accelerator import here: the CLI reads these classes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KernelsCompiling:
    """A run needs CUDA kernels never compiled on this machine (first use): compiling now."""

    kernels: int


@dataclass
class KernelsCompiled:
    kernels: int
    seconds: float


@dataclass
class ThreadsChosen:
    """How many threads the CPU's BLAS runs a run's products on (backend/threads.py), and how
    that was decided: `timed` (ms_per_step: each count's step, forward to backward), `as
    recorded` (a resume), or what fixed it (MLPTRAIN_CPU_TUNE=0, OMP_NUM_THREADS=..., ...)."""

    threads: int
    how: str
    ms_per_step: dict[int, float] = field(default_factory=dict)

    def record(self) -> dict:
        """As summary.json keeps it."""
        return {"threads": self.threads, "how": self.how,
                **({"ms_per_step": {str(n): ms for n, ms in self.ms_per_step.items()}}
                   if self.ms_per_step else {})}
