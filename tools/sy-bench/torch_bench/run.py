"""The benchmark run behind torch_layer_bench.py (see its docstring): set-up, the agreement check
of the two layers, the alternating timed steps and the table."""

import datetime
import os
import socket
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from mpi4py import MPI

import switchyard

from . import PRESETS, PROG, refuse
from .grad_allreduce import GradAllReduce
from .machine import Blas, gemm_gflops
from .megatron_moe import MegatronStyleMoE

# max |switchyard - baseline| / max |baseline|, per tensor: fp32, and switchyard's bf16 compute
# against the fp32 baseline (bf16 inputs: about 3 significant digits per product).
TOLERANCE = {"native": 1e-4, "bf16": 2e-2}
SWITCHYARD, BASELINE = "switchyard", "baseline (Megatron-style)"
COMM = MPI.COMM_WORLD


def say(*lines, stream=sys.stdout):
    if COMM.rank == 0:
        print(*lines, sep="\n", file=stream, flush=True)


def init_gloo():
    """The default torch.distributed group over the MPI ranks (gloo), meeting at rank 0's host
    unless MASTER_ADDR / MASTER_PORT say otherwise."""
    host = COMM.bcast(socket.gethostname())
    one_host = all(COMM.allgather(socket.gethostname() == host))
    port = None
    if COMM.rank == 0 and "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:  # a free port, for the store rank 0 opens right after
            probe.bind(("", 0))
            port = probe.getsockname()[1]
    port = COMM.bcast(port)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1" if one_host else host)
    os.environ.setdefault("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=COMM.rank, world_size=COMM.size,
                            timeout=datetime.timedelta(seconds=300))


def idle_until_all_arrive():
    """A barrier that sleeps instead of polling, so that waiting ranks leave the cores alone."""
    request = COMM.Ibarrier()
    while not request.Test():
        time.sleep(0.01)


def step(layer, x, grad_y, finish=None, set_to_none=False):
    """One forward and backward of this rank after all ranks start together: (y, fwd s, bwd s).
    Gradients are cleared first, untimed: zeroed in place, or dropped (set_to_none), in which
    case backward allocates them anew."""
    layer.zero_grad(set_to_none=set_to_none)
    x.grad = None
    COMM.Barrier()
    start = time.perf_counter()
    y = layer(x)
    mid = time.perf_counter()
    y.backward(grad_y)
    if finish:
        finish()
    return y.detach(), mid - start, time.perf_counter() - mid


def worst_over_ranks(values):
    worst = np.empty(len(values))
    COMM.Allreduce(np.asarray(values, dtype=np.float64), worst, op=MPI.MAX)
    return worst


def check_agreement(sy, base, x, grad_y, reduce, tolerance):
    """One step of each; prints the worst relative differences of y, grad_x and the parameter
    gradients over ranks, and exits every rank with status 1 when one exceeds tolerance."""
    def rel(got, want):
        scale = want.abs().max().item()
        diff = (got - want).abs().max().item()
        return diff / scale if scale > 0 else diff

    y_sy, _, _ = step(sy, x, grad_y)
    grad_x_sy = x.grad.clone()
    y_base, _, _ = step(base, x, grad_y, reduce.finish)
    errors = {"y": rel(y_sy, y_base), "grad_x": rel(grad_x_sy, x.grad), "grad gate": 0.0,
              "grad shared": 0.0, "grad experts": 0.0}
    base_params = dict(base.named_parameters())
    for name, param in sy.named_parameters():
        kind = ("grad gate" if name.startswith("gate.") else
                "grad shared" if name.startswith("shared_experts.") else "grad experts")
        errors[kind] = max(errors[kind], rel(param.grad, base_params[name].grad))
    worst = dict(zip(errors, worst_over_ranks(list(errors.values()))))
    figures = "  ".join(f"{name} {value:.1e}" for name, value in worst.items())
    bad = [name for name, value in worst.items() if not value <= tolerance]
    if bad:
        say(f"correctness: FAILED: switchyard and the baseline disagree on {', '.join(bad)} "
            f"beyond {tolerance:.0e} (max |diff| / max |baseline|, worst rank: {figures})")
        sys.exit(1)
    say(f"correctness (max |switchyard - baseline| / max |baseline|, worst rank): {figures}  "
        f"<= {tolerance:.0e}: ok")


def time_layers(layers, x, grad_y, warmup, iters, set_to_none):
    """Median over the timed steps of the slowest rank's [forward, backward, step] seconds, per
    layer. The layers take turns, in alternating order."""
    times = {name: [] for name in layers}
    every = max(1, iters // 5)
    for i in range(warmup + iters):
        for name in list(layers) if i % 2 == 0 else reversed(list(layers)):
            layer, finish = layers[name]
            _, fwd, bwd = step(layer, x, grad_y, finish, set_to_none)
            if i >= warmup:
                times[name].append(worst_over_ranks([fwd, bwd, fwd + bwd]))
        done = i + 1 - warmup
        if done <= 0:
            say(f"{PROG}: warm-up step {i + 1}/{warmup} done", stream=sys.stderr)
        elif done % every == 0 or done == iters:
            figures = ", ".join(f"{name} {times[name][-1][2] * 1e3:.1f} ms" for name in layers)
            say(f"{PROG}: step {done}/{iters}: {figures}", stream=sys.stderr)
    return {name: np.median(np.stack(rows), axis=0) for name, rows in times.items()}


def step_flops(cfg, tokens):
    """GEMM flops of one forward and backward over `tokens` tokens (backward is twice forward)."""
    widths = cfg.num_experts + 3 * (cfg.top_k + cfg.num_shared) * cfg.intermediate
    return 3 * 2 * tokens * cfg.hidden * widths


def report(medians, tokens, flops, gemm_rate, cores):
    """The table: throughput, time split and GEMM-equivalent rate of each layer; the ratios."""
    rows = [f"{'layer':<26}{'tokens/s':>10}{'step ms':>10}{'fwd ms':>10}{'bwd ms':>10}"
            f"{'GFLOP/s/core':>14}{'of GEMM':>9}"]
    share = {}  # of the measured GEMM rate, per layer
    for name, (fwd, bwd, total) in medians.items():
        per_core = flops / total / cores / 1e9
        share[name] = per_core / gemm_rate
        rows.append(f"{name:<26}{tokens / total:>10.1f}{total * 1e3:>10.1f}{fwd * 1e3:>10.1f}"
                    f"{bwd * 1e3:>10.1f}{per_core:>14.1f}{share[name]:>9.0%}")
    sy, base = medians[SWITCHYARD], medians[BASELINE]
    rows.append(f"switchyard / baseline: tokens/s {base[2] / sy[2]:.2f}; baseline time / "
                f"switchyard time: forward {base[0] / sy[0]:.2f}, backward {base[1] / sy[1]:.2f}")
    # The most any fp32 layer can gain on the baseline here: its step's GEMMs at the measured rate
    # on every core, nothing else (no routing, all-to-all, activations or memory traffic beyond).
    rows.append(f"ceiling: a layer running this step's GEMMs at {gemm_rate:.1f} GFLOP/s per core "
                f"and nothing else would reach {1 / share[BASELINE]:.2f}x the baseline (fp32)")
    say("", *rows)


def run(args):
    preset = PRESETS[args.preset]
    if preset["num_experts"] % COMM.size:
        refuse(f"{preset['num_experts']} experts do not split into equal blocks over {COMM.size} "
               "ranks (the baseline needs that); use a rank count that divides it")
    blas = Blas()
    blas.set_threads(args.threads)
    init_gloo()

    context = switchyard.Context(COMM)
    cfg = switchyard.MoEConfig(**preset, overlap=args.overlap, backend=args.backend,
                               compute=args.compute)
    sy = switchyard.MoELayer(cfg, context, seed=args.seed)
    base = MegatronStyleMoE(**preset)
    if sy.expert_ids != base.expert_ids:
        raise RuntimeError(f"switchyard placed experts {sy.expert_ids} on rank {COMM.rank}, the "
                           f"baseline {base.expert_ids}: the comparison needs the same placement")
    base.load_state_dict(sy.state_dict())
    reduce = GradAllReduce(base.replicated_parameters())

    gen = torch.Generator().manual_seed(args.seed * 100003 + COMM.rank)
    x = torch.randn(args.tokens, cfg.hidden, generator=gen).requires_grad_()
    grad_y = torch.randn(args.tokens, cfg.hidden, generator=gen)
    tokens = args.tokens * COMM.size
    say(f"{PROG}: preset {args.preset} (H {cfg.hidden}, {cfg.num_experts} routed + "
        f"{cfg.num_shared} shared experts, top-{cfg.top_k}, I {cfg.intermediate}), fp32, "
        f"{args.tokens} tokens/rank x {COMM.size} ranks = {tokens} tokens/step, experts in "
        f"contiguous blocks of {cfg.num_experts // COMM.size} per rank",
        f"switchyard {switchyard.version()} from {switchyard.lib._name}, overlap {args.overlap}, "
        f"backend {args.backend}, compute {args.compute}",
        f"baseline: torch {torch.__version__}, gloo all_to_all_single, DDP-style bucketed "
        "gradient all-reduce", blas.describe())

    check_agreement(sy, base, x, grad_y, reduce, TOLERANCE[args.compute])
    gemm_rate = gemm_gflops(blas) if COMM.rank == 0 else None
    idle_until_all_arrive()
    gemm_rate = COMM.bcast(gemm_rate)
    # mpirun may bind each rank to a core: count the cores the ranks may run on together.
    allowed = set().union(*COMM.allgather(os.sched_getaffinity(0)))
    cores = min(COMM.size * args.threads, len(allowed))
    say(f"fp32 GEMM rate: {gemm_rate:.1f} GFLOP/s (torch.mm 2048^3, one thread, rank 0 alone, "
        f"best of 3); {cores} cores in use")

    layers = {SWITCHYARD: (sy, None), BASELINE: (base, reduce.finish)}
    medians = time_layers(layers, x, grad_y, args.warmup, args.iters, args.zero_grad == "none")
    say(f"medians over {args.iters} timed steps (after {args.warmup} warm-up) of the slowest "
        "rank, each column its own; step = forward + backward, gradient all-reduce included; "
        f"gradients cleared {'to None' if args.zero_grad == 'none' else 'in place'} between steps")
    report(medians, tokens, step_flops(cfg, tokens), gemm_rate, cores)
    context.close()


def main(args):
    try:
        run(args)
    except Exception as error:  # one line, then stop the peers, which may be waiting on this rank
        print(f"{PROG}: error on rank {COMM.rank}: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        COMM.Abort(1)
