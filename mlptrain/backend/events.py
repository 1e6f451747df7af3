"""What a backend reports while it sets up (the loop passes these on; the CLI renders them).
No accelerator import here: the CLI reads these classes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KernelsCompiling:
    """A run needs CUDA kernels never compiled on this machine (first use): compiling now."""

    kernels: int


@dataclass
class KernelsCompiled:
    kernels: int
    seconds: float
