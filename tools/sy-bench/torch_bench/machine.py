"""What the run computed with: the BLAS library torch loaded (OpenBLAS's core type and threads,
since Debian's generic libblas.so.3 may be the reference BLAS, far slower) and the fp32 GEMM rate
of one thread on this machine, the reference against which the layers' rates can be read."""

import ctypes
import os
import time

import torch


def _loaded_openblas():
    """The OpenBLAS library mapped into this process (torch's BLAS), or None."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/libopenblas" in line}
    for path in sorted(paths):
        lib = ctypes.CDLL(path)  # already loaded: the same instance torch calls
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return path, lib
    return None


class Blas:
    """torch's BLAS: a one-line description, and its thread count set to the ranks' own."""

    def __init__(self):
        torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # makes sure the BLAS library is loaded
        self._openblas = _loaded_openblas()

    def set_threads(self, threads):
        torch.set_num_threads(threads)
        if self._openblas:
            self._openblas[1].openblas_set_num_threads(threads)

    def describe(self):
        if not self._openblas:
            blas = torch.__config__.show().split("BLAS_INFO=")[-1].split(",")[0]
            core = os.environ.get("OPENBLAS_CORETYPE", "unknown")
            return f"BLAS: not OpenBLAS (torch's BLAS_INFO {blas}), OPENBLAS_CORETYPE {core}"
        path, lib = self._openblas
        return (f"BLAS: {lib.openblas_get_config().decode()} ({path}), openblas corename "
                f"{lib.openblas_get_corename().decode()}, OpenBLAS threads "
                f"{lib.openblas_get_num_threads()}, torch threads {torch.get_num_threads()}")


def gemm_gflops(blas, n=2048, repeats=3):
    """Best-of-repeats rate of torch.mm on fp32 [n, n] x [n, n] with one thread, in GFLOP/s."""
    threads = torch.get_num_threads()
    blas.set_threads(1)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    blas.set_threads(threads)
    return 2 * n**3 / best / 1e9
