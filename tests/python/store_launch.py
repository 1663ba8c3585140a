"""Runs ranks without MPI, as torchrun would: this script starts each rank as a plain process with
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK and SWITCHYARD_JOB_SECRET set (loopback only).

    store_launch.py parity [--ranks N]    each rank runs forward+backward of the layer on its slice
                                          of a global batch (switchyard.Context.from_env) and
                                          saves its results; this process then compares them with
                                          the torch reference on the whole batch (fp32, 1e-5)
    store_launch.py example [--ranks N]   examples/torch_plugin/train.py --launcher env; its loss
                                          must fall

Every rank gets a deadline; a rank that fails or hangs fails the run, with its output shown.
"""

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TRAIN = HERE.parents[1] / "examples" / "torch_plugin" / "train.py"
DEADLINE_S = 60
# Routing variants of the MPI parity test (test_parity.py), with uneven token counts.
CASES = ["sigmoid_v3_groups_bias", "softmax_v2_groups_aux", "softmax_shared"]
COUNTS = (7, 3, 5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(ranks, argv, extra_env=None):
    """Starts `ranks` processes of argv with torchrun's variables; fails unless all exit 0."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(ranks), SWITCHYARD_JOB_SECRET=secrets.token_hex(16),
               OPENBLAS_NUM_THREADS="1", **(extra_env or {}))
    procs = [subprocess.Popen(argv, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(ranks)]
    failed = []
    for r, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, _ = p.communicate()
            p.returncode = "timeout"
        print(f"--- rank {r} (exit {p.returncode}) ---\n{out}", flush=True)
        if p.returncode != 0:
            failed.append(r)
    if failed:
        sys.exit(f"store_launch: rank(s) {failed} failed")


def worker(out_dir):
    """One rank: forward+backward of every case on its slice; saves what the parent compares."""
    import switchyard
    import test_parity

    assert "mpi4py" not in sys.modules
    context = switchyard.Context.from_env(timeout_ms=20000)
    rank, size = context.rank, context.size
    results = {}
    for case in CASES:
        cfg = switchyard.MoEConfig(**test_parity.CASES[case])
        counts = [COUNTS[r % 3] for r in range(size)]
        weights = test_parity.reference.random_weights(cfg, seed=11)
        layer = switchyard.MoELayer(cfg, context)
        layer.load_hf_state_dict(weights)
        gen = torch.Generator().manual_seed(3)
        x_all = torch.randn(sum(counts), cfg.hidden, generator=gen)
        grad_all = torch.randn(sum(counts), cfg.hidden, generator=gen)
        mine = slice(sum(counts[:rank]), sum(counts[:rank + 1]))
        x = x_all[mine].clone().requires_grad_()
        y = layer(x)
        y.backward(grad_all[mine])
        results[case] = dict(expert_ids=layer.expert_ids, y=y.detach(), grad_x=x.grad,
                             aux=layer.last_aux,
                             grads={n: p.grad for n, p in layer.named_parameters()})
    context.close()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def check_parity(out_dir, ranks):
    """The ranks' results against the reference on the global batch."""
    import switchyard
    import test_parity

    reference = test_parity.reference
    per_rank = [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(ranks)]
    for case in CASES:
        cfg = switchyard.MoEConfig(**test_parity.CASES[case])
        counts = [COUNTS[r % 3] for r in range(ranks)]
        weights = reference.random_weights(cfg, seed=11)
        gen = torch.Generator().manual_seed(3)
        x_all = torch.randn(sum(counts), cfg.hidden, generator=gen)
        grad_all = torch.randn(sum(counts), cfg.hidden, generator=gen)
        device_of_expert = [0] * cfg.num_experts
        for r, result in enumerate(per_rank):
            for e in result[case]["expert_ids"]:
                device_of_expert[e] = r
        y_ref, aux_ref, x_ref, ref_weights = reference.gradients(cfg, weights, x_all, grad_all,
                                                                 device_of_expert)
        for r, result in enumerate(per_rank):
            got = result[case]
            mine = slice(sum(counts[:r]), sum(counts[:r + 1]))
            test_parity.assert_close(f"{case} rank {r} y", got["y"], y_ref[mine])
            test_parity.assert_close(f"{case} rank {r} grad x", got["grad_x"], x_ref.grad[mine])
            for name, grad in got["grads"].items():
                test_parity.assert_close(f"{case} rank {r} grad {name}", grad,
                                         ref_weights[name].grad)
            if aux_ref is not None:
                for name, value, want in zip(switchyard.AuxLosses._fields, got["aux"], aux_ref):
                    test_parity.assert_close(f"{case} rank {r} aux {name}", torch.tensor(value),
                                             want.detach())
        print(f"{case}: {ranks} ranks without MPI match the reference", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["parity", "example", "worker"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", help="(worker) where to save this rank's results")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.mode == "worker":
        return worker(args.out)
    if args.mode == "example":
        # torch.distributed's store takes MASTER_PORT; switchyard's gets its own, as under torchrun.
        return launch(args.ranks, [sys.executable, str(TRAIN), "--launcher", "env", "--steps",
                                   "40", "--require-loss-drop", "0.4"],
                      {"SWITCHYARD_MASTER_PORT": str(free_port())})
    with tempfile.TemporaryDirectory() as out:
        launch(args.ranks, [sys.executable, __file__, "worker", "--out", out])
        check_parity(out, args.ranks)


if __name__ == "__main__":
    sys.exit(main())
