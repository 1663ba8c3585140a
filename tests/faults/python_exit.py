"""A user's script under mpirun that catches switchyard's error and returns normally: after a peer
failed, the package must end the job (MPI_Abort at exit) rather than hang in MPI_Finalize.
Run by fault_drill.py mpi-python with SWITCHYARD_FAULT set."""

import sys

import torch

import switchyard


def main():
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    config = switchyard.MoEConfig(hidden=16, num_experts=4, top_k=2, intermediate=8, num_shared=1)
    with switchyard.Context(timeout_ms=int(float(sys.argv[1]) * 1000)) as context:
        layer = switchyard.MoELayer(config, context)
        x = torch.randn(6, 16, requires_grad=True)
        try:
            for _ in range(3):
                layer(x).sum().backward()
        except switchyard.SwitchyardError as e:
            print(f"python_exit.py: rank {rank}: {e}", file=sys.stderr, flush=True)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
