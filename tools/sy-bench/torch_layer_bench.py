"""torch_layer_bench: switchyard's whole MoE layer (its PyTorch package) against the layer a user
would otherwise pick, a Megatron-Core-style expert-parallel MoE layer in plain PyTorch
(torch_bench/megatron_moe.py, all-to-alls over gloo), in one run:

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 \\
    mpirun --oversubscribe --mca mpi_yield_when_idle 1 -np 4 \\
      /usr/bin/python3 tools/sy-bench/torch_layer_bench.py --preset dsmoe16b --iters 3 --warmup 1

Both layers get the same weights (the baseline loads switchyard's state dict), the same experts
per rank (contiguous blocks), the same input and output gradient per rank. A step is forward,
backward and the summing of the replicated parameters' gradients over ranks (switchyard does it
inside backward; the baseline as DistributedDataParallel would). First one step of each is
checked against the other; then warm-up and timed steps alternate between the layers, so that
noise on this shared machine falls on both. Figures are medians over the timed steps of the
slowest rank. The library is this checkout's python/switchyard over $SWITCHYARD_LIB, else
build/release/runtime/libswitchyard.so.
"""

import argparse
import sys
from pathlib import Path

from torch_bench import PRESETS, PROG, refuse

REPO = Path(__file__).resolve().parents[2]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        refuse(message)


def _count(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer >= {minimum}")
        return value
    return parse


def parse_args():
    parser = _Parser(prog=PROG, description="switchyard's MoE layer against a Megatron-Core-style "
                     "PyTorch MoE layer; launch with mpirun, one process per rank")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="dsmoe16b: DeepSeekMoE-16B's layer (H 2048, 64 routed + 2 shared "
                        "experts, top-6, I 1408); tiny: H 256, 16 routed + 1 shared, top-2, I 512")
    parser.add_argument("--tokens", type=_count(1), default=256,
                        help="tokens per rank (default %(default)s)")
    parser.add_argument("--iters", type=_count(1), default=10,
                        help="timed steps of each layer (default %(default)s)")
    parser.add_argument("--warmup", type=_count(0), default=2,
                        help="untimed steps of each layer (default %(default)s)")
    parser.add_argument("--threads", type=_count(1), default=1,
                        help="torch and OpenBLAS threads per rank (default %(default)s)")
    parser.add_argument("--overlap", choices=("off", "on", "auto"), default="off",
                        help="switchyard's MoEConfig.overlap (default: the package's, off)")
    parser.add_argument("--backend", choices=("default", "openblas", "onednn"), default="default",
                        help="switchyard's kernel backend (default: SWITCHYARD_BACKEND, else "
                        "openblas)")
    parser.add_argument("--compute", choices=("native", "bf16"), default="native",
                        help="switchyard's expert GEMM input precision; bf16 needs onednn (the "
                        "baseline stays fp32)")
    parser.add_argument("--zero-grad", choices=("inplace", "none"), default="inplace",
                        help="clear gradients between steps in place (torch 1.x's zero_grad, "
                        "Megatron-Core's gradient buffers; default) or to None (torch 2.x's "
                        "zero_grad: backward then allocates them)")
    parser.add_argument("--seed", type=_count(0), default=1,
                        help="of the weights and inputs (default %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        import mpi4py  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        refuse(f"{error} in {sys.executable}; run a python3 with torch and mpi4py (Debian: "
               "/usr/bin/python3 with python3-torch and python3-mpi4py)", status=1)
    sys.path.insert(0, str(REPO / "python"))  # this checkout's package, not an installed one
    try:
        import switchyard  # noqa: F401
    except ImportError as error:  # the library was not found: alike on every rank
        refuse(str(error), status=1)
    from torch_bench import run

    run.main(args)


if __name__ == "__main__":
    main()
