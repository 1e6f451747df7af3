"""kernels.cu compiles, every kernel for both dtypes and every GEMM tile, without a GPU.

NVRTC (the runtime compiler CuPy uses on the GPU machine) needs no device to compile CUDA to
PTX, and ships as a wheel: so a CPU-only CI catches a CUDA syntax or type error before anyone
reaches the GPU. What the kernels compute is test_gpu*.py's, on the GPU.
"""

from __future__ import annotations

import ast
import ctypes
import re
from pathlib import Path

import pytest
from conftest import ROOT

CUDA = ROOT / "mlptrain" / "backend" / "cuda"
ARCH = "compute_90"  # PTX for Hopper (H100/H200), what the device machine runs


def _nvrtc() -> ctypes.CDLL:
    try:
        import nvidia.cuda_nvrtc  # the nvidia-cuda-nvrtc-cu12 wheel (the test extra, Linux)
    except ImportError:
        pytest.skip("NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")
    for folder in nvidia.cuda_nvrtc.__path__:
        found = sorted(Path(folder, "lib").glob("libnvrtc.so.*"))
        if found:
            return ctypes.CDLL(str(found[0]))
    pytest.skip("the NVRTC wheel holds no libnvrtc.so")


def _template_kernels(source: str) -> list[str]:
    """Every `template <typename T> __global__` kernel, by name."""
    plain = re.sub(r"__launch_bounds__\s*\([^\n]*\)", "", source)
    return re.findall(r"template <typename T>\s*__global__\s+void\s+(\w+)\s*\(", plain)


def _gemm_constant(name: str):
    """A literal constant of gemm.py (TILES, TRANSPOSES), read from its source: importing it
    needs CuPy."""
    tree = ast.parse((CUDA / "gemm.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"gemm.py defines no {name}")


def _tensor_core_modes(source: str) -> list[int]:
    """The MMA_* multiplies of kernels.cu but SIMT: float32's tensor-core kernels."""
    found = dict(re.findall(r"^#define\s+(MMA_\w+)\s+(\d+)", source, flags=re.M))
    return [int(v) for k, v in found.items() if k != "MMA_SIMT"]


def _instantiations(source: str) -> list[str]:
    names = [f"{k}<{t}>" for k in _template_kernels(source) for t in ("float", "double")]
    flag = {False: "false", True: "true"}
    for t in ("float", "double"):
        for ta, tb in _gemm_constant("TRANSPOSES"):
            names += [f"gemm<{t},{flag[ta]},{flag[tb]},{','.join(map(str, tile))}>"
                      for tile in _gemm_constant("TILES").values()]
            if t == "float":  # every tile on the tensor cores too (gemm.gemm_name's names)
                names += [f"gemm<{t},{flag[ta]},{flag[tb]},{','.join(map(str, tile))},{mma}>"
                          for tile in _gemm_constant("TILES").values()
                          for mma in _tensor_core_modes(source)]
                # and the tensor cores' fast kernel, every tile and multiply
                kf = _gemm_constant("TC_KF")
                names += [f"gemm_tc<{flag[ta]},{flag[tb]},{','.join(map(str, tile))},{kf},{mma}>"
                          for tile in _gemm_constant("TC_TILES").values()
                          for mma in _tensor_core_modes(source)]
                # and 3xTF32 adding every two K-steps (KF = 2, compared in the benchmark)
                names += [f"gemm_tc<{flag[ta]},{flag[tb]},{','.join(map(str, tile))},2,4>"
                          for tile in _gemm_constant("TC_TILES").values()]
    return names


def _compile(lib: ctypes.CDLL, source: str, names: list[str]) -> tuple[int, str]:
    program = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernels.cu", 0,
                                  None, None) == 0
    try:
        for name in names:
            assert lib.nvrtcAddNameExpression(program, name.encode()) == 0, name
        options = [b"--std=c++17", f"--gpu-architecture={ARCH}".encode()]
        status = lib.nvrtcCompileProgram(program, len(options),
                                         (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        return status, log.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


def test_the_instantiation_list_covers_the_kernels_the_backend_names():
    names = _instantiations((CUDA / "kernels.cu").read_text())
    for kernel in ("augment", "elastic_field", "dropout", "softmax_xent", "sgd_update",
                   "adam_update", "max_norm", "splitk_reduce"):
        assert f"{kernel}<float>" in names and f"{kernel}<double>" in names
    modes = _tensor_core_modes((CUDA / "kernels.cu").read_text())
    assert len(modes) >= 2  # 3xTF32 and TF32 at least
    assert sum(n.startswith("gemm<") for n in names) == (2 + len(modes)) * 3 * len(
        _gemm_constant("TILES"))
    assert sum(n.startswith("gemm_tc<") for n in names) == (len(modes) + 1) * 3 * len(
        _gemm_constant("TC_TILES"))


@pytest.mark.slow
def test_every_kernel_compiles_with_nvrtc():
    lib = _nvrtc()
    source = (CUDA / "kernels.cu").read_text()
    status, log = _compile(lib, source, _instantiations(source))
    assert status == 0, log


@pytest.mark.slow
def test_a_cuda_error_fails_the_compile():
    """The check can fail: a kernel calling an undeclared function does not compile."""
    lib = _nvrtc()
    source = ((CUDA / "kernels.cu").read_text()
              + "\n__device__ int broken() { return undeclared_call(); }\n")
    status, log = _compile(lib, source, ["dropout<float>"])
    assert status != 0 and "undeclared_call" in log
