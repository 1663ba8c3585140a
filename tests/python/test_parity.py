"""MoELayer against the plain PyTorch reference (deepseek_moe_reference.py) on the global batch:
this rank's output slice, its input gradient, and the gradients of the gate, the shared experts
and the experts this rank holds, for routing variants, uneven token counts and empty ranks."""

import pytest
import torch

import deepseek_moe_reference as reference
import switchyard

PREFIX = "model.layers.1.mlp."  # as in a full Hugging Face checkpoint
TOLERANCE = 1e-5  # relative, in norm, fp32 against the float64 reference

CASES = {
    "softmax_shared": dict(hidden=16, num_experts=8, top_k=2, intermediate=8, num_shared=2),
    "sigmoid_v3_groups_bias": dict(hidden=16, num_experts=8, top_k=3, intermediate=8,
                                   num_shared=1, scoring="sigmoid", n_group=4, topk_group=2,
                                   selection_bias=True, norm_topk_prob=True,
                                   routed_scaling_factor=2.5),
    "softmax_v2_groups_aux": dict(hidden=12, num_experts=6, top_k=2, intermediate=4,
                                  num_shared=1, n_group=3, topk_group=2, group_score="max",
                                  aux_expert_alpha=0.05, aux_device_alpha=0.03, z_loss_alpha=0.01),
    "uneven_experts_no_shared": dict(hidden=8, num_experts=5, top_k=5, intermediate=6,
                                     norm_topk_prob=True),
}
# Tokens of rank r of n. "last_rank_empty": on one rank, the whole batch is empty.
TOKEN_PATTERNS = {
    "uneven": lambda r, n: (7, 3, 5)[r % 3],
    "last_rank_empty": lambda r, n: 0 if r == n - 1 else 6,
}


def assert_close(name, got, want, tolerance=TOLERANCE):
    err = (got.double() - want).norm().item()
    scale = want.norm().item()
    assert err <= tolerance * scale, f"{name}: relative error {err / max(scale, 1e-300):.3e}"


def check_against_reference(layer, comm, weights, counts, seed, tolerance=TOLERANCE):
    """Runs forward and backward on this rank's slice of a global batch and compares with the
    reference's result on the whole batch; returns the output's relative error."""
    cfg, rank = layer.config, comm.Get_rank()
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.randn(sum(counts), cfg.hidden, generator=gen)
    grad_all = torch.randn(sum(counts), cfg.hidden, generator=gen)
    mine = slice(sum(counts[:rank]), sum(counts[:rank + 1]))

    x = x_all[mine].clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(grad_all[mine])

    device_of_expert = [0] * cfg.num_experts
    for r, held in enumerate(comm.allgather(layer.expert_ids)):
        for e in held:
            device_of_expert[e] = r
    y_ref, aux_ref, x_ref, ref_weights = reference.gradients(cfg, weights, x_all, grad_all,
                                                             device_of_expert)
    if aux_ref is not None:
        for name, got, want in zip(switchyard.AuxLosses._fields, layer.last_aux, aux_ref):
            assert_close(f"aux {name}", torch.tensor(got), want.detach())

    assert_close("y", y.detach(), y_ref[mine], tolerance)
    assert_close("grad x", x.grad, x_ref.grad[mine], tolerance)
    for name, param in layer.named_parameters():
        assert_close(f"grad {name}", param.grad, ref_weights[name].grad, tolerance)
    scale = y_ref[mine].norm().item()
    return (y.detach().double() - y_ref[mine]).norm().item() / scale if scale > 0 else 0.0


@pytest.mark.parametrize("overlap", [dict(), dict(overlap="on", overlap_chunks=3)],
                         ids=["serial", "pipelined"])
@pytest.mark.parametrize("pattern", sorted(TOKEN_PATTERNS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(context, comm, case, pattern, overlap):
    cfg = switchyard.MoEConfig(**CASES[case], **overlap)
    size = comm.Get_size()
    counts = [TOKEN_PATTERNS[pattern](r, size) for r in range(size)]
    weights = reference.random_weights(cfg, seed=11)
    layer = switchyard.MoELayer(cfg, context)
    layer.load_hf_state_dict({PREFIX + k: v for k, v in weights.items()}, prefix=PREFIX)
    check_against_reference(layer, comm, weights, counts, seed=3)

    # An optimiser changes the parameters in place; the next forward must see the new values.
    step = reference.random_weights(cfg, seed=12)
    weights = {k: v + 0.1 * step[k] for k, v in weights.items()}
    with torch.no_grad():
        for name, param in layer.named_parameters():
            param.copy_(weights[name])
        if cfg.selection_bias:
            layer.gate.e_score_correction_bias.copy_(weights["gate.e_score_correction_bias"])
    check_against_reference(layer, comm, weights, counts, seed=4)


@pytest.mark.parametrize("overlap", [dict(), dict(overlap="on", overlap_chunks=3)],
                         ids=["serial", "pipelined"])
def test_bf16_wire_within_bf16_precision(context, comm, overlap):
    """wire="bf16" rounds the rows on the wire: within bf16's precision of the reference (unit
    roundoff 2**-9, a few roundings per value), and visibly rounded."""
    cfg = switchyard.MoEConfig(**CASES["softmax_shared"], wire="bf16", **overlap)
    counts = [TOKEN_PATTERNS["uneven"](r, comm.Get_size()) for r in range(comm.Get_size())]
    weights = reference.random_weights(cfg, seed=11)
    layer = switchyard.MoELayer(cfg, context)
    layer.load_hf_state_dict({PREFIX + k: v for k, v in weights.items()}, prefix=PREFIX)
    y_error = check_against_reference(layer, comm, weights, counts, seed=3, tolerance=1e-2)
    assert y_error > 1e-4, f"output relative error {y_error:.2e}: no bf16 rounding seen"


def test_expert_ownership_covers_every_expert(context, comm):
    cfg = switchyard.MoEConfig(**CASES["uneven_experts_no_shared"])
    layer = switchyard.MoELayer(cfg, context)
    held = sorted(e for ids in comm.allgather(layer.expert_ids) for e in ids)
    assert held == list(range(cfg.num_experts))
    assert sorted(n for n, _ in layer.named_parameters()) == sorted(
        f"experts.{e}.{p}.weight" for e in layer.expert_ids for p in reference.PROJECTIONS
    ) + ["gate.weight"]


def test_ties_go_to_the_lower_index(context, comm):
    """With a zero gate every score ties: groups 0 and experts 0, 1 must win on every rank."""
    cfg = switchyard.MoEConfig(hidden=8, num_experts=8, top_k=2, intermediate=4, num_shared=1,
                               n_group=4, topk_group=1)
    weights = reference.random_weights(cfg, seed=21)
    weights["gate.weight"].zero_()
    layer = switchyard.MoELayer(cfg, context)
    layer.load_hf_state_dict(weights)
    counts = [4] * comm.Get_size()
    check_against_reference(layer, comm, weights, counts, seed=5)
    want = torch.zeros(cfg.num_experts, dtype=torch.float64)
    want[:2] = sum(counts)
    assert torch.equal(layer.expert_load(), want)
