"""torch_layer_bench's parts: the Megatron-Core-style baseline layer (megatron_moe), its
DDP-style gradient all-reduce (grad_allreduce), the machine's BLAS and GEMM rate (machine) and the
benchmark run itself (run). This module stays free of torch so that the launcher can refuse bad
flags and a python without torch before importing it."""

import os
import sys

PROG = "torch_layer_bench"
# The layer shapes of --preset. DeepSeekMoE-16B's MoE layer (norm_topk_prob off, softmax scoring,
# no expert groups), and a small one for tests.
PRESETS = {
    "dsmoe16b": dict(hidden=2048, num_experts=64, num_shared=2, top_k=6, intermediate=1408),
    "tiny": dict(hidden=256, num_experts=16, num_shared=1, top_k=2, intermediate=512),
}


def launcher_rank():
    """This process's rank from the launcher's environment, readable before MPI is initialised."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def refuse(message, status=2):
    """Ends this rank on an error every rank detects alike (a bad flag), said once, by rank 0."""
    if launcher_rank() == 0:
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)
