"""A small PyTorch model with switchyard's expert-parallel MoE layer inside, trained with Adam.

    embedding -> switchyard.MoELayer (+ residual) -> linear head, cross-entropy

The task is next-token-ish: token t is followed by one of two fixed successors of t (probability
3/4 and 1/4), so the best reachable loss is about 0.56 nats against ln(V) at the start. Each rank
draws its own batch; the loss is that of the global batch (the sum over ranks of each rank's
token losses divided by the global token count). The MoE layer's gradients arrive summed over
ranks already; the embedding and the head are replicated, so their gradients are all-reduced
here with mpi4py.

    mpirun -np 2 /usr/bin/python3 examples/torch_plugin/train.py [--steps N] [--require-loss-drop F]

(as root, OpenMPI also needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). The
library comes from $SWITCHYARD_LIB or build/release/runtime/libswitchyard.so.

Without MPI, launched torchrun-style (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK):

    SWITCHYARD_JOB_SECRET=$(openssl rand -hex 16) SWITCHYARD_MASTER_PORT=29501 \
        torchrun --nproc-per-node 2 examples/torch_plugin/train.py --launcher env

The layer meets its peers at switchyard's own store (SWITCHYARD_MASTER_PORT: torchrun's store
holds MASTER_PORT) and the replicated parameters are all-reduced with torch.distributed (gloo).

--timeout S bounds every wait for another rank (default SWITCHYARD_TIMEOUT, else 120 s). When a
rank dies or stops, the others fail within about S seconds naming it, print one line and end the
job: under MPI with MPI_Abort (MPI cannot finalise with a peer gone), without MPI by exiting at
once (switchyard's own teardown no longer waits for a failed peer).
"""

import argparse
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))  # run from a checkout
import switchyard  # noqa: E402

VOCAB, HIDDEN = 64, 32


class Model(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        config = switchyard.MoEConfig(hidden=HIDDEN, num_experts=8, top_k=2, intermediate=32,
                                      num_shared=1, n_group=4, topk_group=2,
                                      norm_topk_prob=True, aux_expert_alpha=0.01)
        self.moe = switchyard.MoELayer(config, context, seed=1)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens):
        h = self.embed(tokens)
        return self.head(h + self.moe(h))


def batch(successors, generator, size):
    """Tokens and their next tokens: the first successor with probability 3/4, else the second."""
    tokens = torch.randint(VOCAB, (size,), generator=generator)
    second = torch.rand(size, generator=generator) < 0.25
    return tokens, successors[second.long(), tokens]


class MpiGroup:
    """Sums over the ranks of an mpi4py communicator (COMM_WORLD when None)."""

    def __init__(self, comm=None, timeout_s=0):
        from mpi4py import MPI

        self.mpi, self.comm = MPI, comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.timeout_ms = int(timeout_s * 1000)

    def context(self):
        return switchyard.Context(self.comm, timeout_ms=self.timeout_ms)

    def abort(self, code):
        self.comm.Abort(code)

    def sum(self, value):
        return self.comm.allreduce(value)

    def sum_(self, tensor):
        self.comm.Allreduce(self.mpi.IN_PLACE, tensor.numpy(), op=self.mpi.SUM)


class EnvGroup:
    """Sums over torchrun-launched ranks with torch.distributed (gloo); no MPI."""

    def __init__(self, timeout_s=0):
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            # gloo's bound covers its rendezvous too, where ranks may start seconds apart.
            kwargs = {"timeout": datetime.timedelta(seconds=max(timeout_s, 60))} if timeout_s else {}
            dist.init_process_group("gloo", **kwargs)
        self.dist, self.rank = dist, dist.get_rank()
        self.timeout_ms = int(timeout_s * 1000)

    def context(self):
        return switchyard.Context.from_env(timeout_ms=self.timeout_ms)

    def abort(self, code):
        os._exit(code)

    def sum(self, value):
        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return t.item()

    def sum_(self, tensor):
        self.dist.all_reduce(tensor)


def train(steps=80, tokens_per_rank=128, lr=1e-2, comm=None, group=None):
    """Trains and returns the loss of every step (the same on every rank). group: MpiGroup (the
    default, over comm) or EnvGroup."""
    group = group if group is not None else MpiGroup(comm)
    rank = group.rank
    torch.manual_seed(0)  # the same task and the same replicated initial weights on every rank
    successors = torch.stack([torch.randperm(VOCAB), torch.randperm(VOCAB)])
    with group.context() as context:
        model = Model(context)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        replicated = [p for name, p in model.named_parameters() if not name.startswith("moe.")]
        generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches
        global_tokens = group.sum(tokens_per_rank)
        losses = []
        for step in range(steps):
            tokens, targets = batch(successors, generator, tokens_per_rank)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(tokens), targets, reduction="sum")
            (loss / global_tokens).backward()
            for p in replicated:
                group.sum_(p.grad)
            optimizer.step()
            losses.append(group.sum(loss.item()) / global_tokens)
            if rank == 0:
                aux = model.moe.last_aux
                print(f"step {step + 1:3d}/{steps}  loss {losses[-1]:.4f}  aux expert "
                      f"{aux.expert_balance:.3f} device {aux.device_balance:.3f}", flush=True)
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--tokens-per-rank", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--require-loss-drop", type=float, metavar="F",
                        help="exit 1 unless the last loss <= F x the first")
    parser.add_argument("--launcher", choices=["mpi", "env"], default="mpi",
                        help="mpi: mpirun (mpi4py); env: torchrun-style environment, no MPI")
    parser.add_argument("--timeout", type=float, default=0, metavar="S",
                        help="seconds any wait for another rank may take (default: "
                             "SWITCHYARD_TIMEOUT, else 120)")
    args = parser.parse_args(argv)
    if not 0 <= args.timeout <= 7 * 86400:
        parser.error(f"--timeout {args.timeout}: give seconds in (0, 604800]")
    group = EnvGroup(args.timeout) if args.launcher == "env" else MpiGroup(timeout_s=args.timeout)
    try:
        losses = train(args.steps, args.tokens_per_rank, args.lr, group=group)
    except switchyard.SwitchyardError as e:
        print(f"train.py: rank {group.rank}: {e}", file=sys.stderr, flush=True)
        group.abort(2)
    if group.rank == 0:
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} (ln V = {math.log(VOCAB):.4f})")
    if args.require_loss_drop is not None and losses[-1] > args.require_loss_drop * losses[0]:
        if group.rank == 0:
            print(f"the loss did not fall to {args.require_loss_drop} x the first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
