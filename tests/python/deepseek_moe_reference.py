"""A plain PyTorch DeepSeekMoE layer holding every expert, written from DESIGN.md "Routing
semantics" without looking at the C library, so that the tests compare two independent readings
of the definition. It runs in float64 on the global batch; autograd gives its gradients."""

import torch
import torch.nn.functional as F

PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def random_weights(cfg, seed):
    """Every tensor of the layer, all routed experts included, by Hugging Face name (fp32)."""
    gen = torch.Generator().manual_seed(seed)
    h, i, s = cfg.hidden, cfg.intermediate, cfg.num_shared * cfg.intermediate
    shapes = {"gate.weight": (cfg.num_experts, h)}
    if cfg.selection_bias:
        shapes["gate.e_score_correction_bias"] = (cfg.num_experts,)
    blocks = [("shared_experts.", s)] if s else []
    blocks += [(f"experts.{e}.", i) for e in range(cfg.num_experts)]
    for block, width in blocks:
        shapes.update({f"{block}gate_proj.weight": (width, h), f"{block}up_proj.weight": (width, h),
                       f"{block}down_proj.weight": (h, width)})
    return {name: 0.4 * torch.randn(shape, generator=gen) for name, shape in shapes.items()}


def top_indices(values, k):
    """Indices of the k largest entries of each row; ties go to the lower index."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices[..., :k]


def swiglu(x, weights, prefix):
    gate, up, down = (weights[f"{prefix}{p}.weight"] for p in PROJECTIONS)
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def route(cfg, logits, bias):
    """Unbiased scores, selected experts [T, K] and their weights [T, K] (steps 1-5)."""
    scores = torch.softmax(logits, -1) if cfg.scoring == "softmax" else torch.sigmoid(logits)
    select = scores.detach() + (bias if cfg.selection_bias else 0)
    if cfg.n_group > 1:
        grouped = select.view(select.shape[0], cfg.n_group, cfg.num_experts // cfg.n_group)
        if cfg.group_score == "top2_sum":
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        else:
            group_scores = grouped.max(-1).values
        keep = torch.zeros_like(group_scores, dtype=torch.bool)
        keep.scatter_(1, top_indices(group_scores, cfg.topk_group), True)
        dropped = ~keep.repeat_interleave(grouped.shape[-1], dim=1)
        select = select.masked_fill(dropped, float("-inf"))
    idx = top_indices(select, cfg.top_k)
    weights = scores.gather(1, idx)
    if cfg.norm_topk_prob:
        weights = weights / weights.sum(-1, keepdim=True)
    return scores, idx, weights * cfg.routed_scaling_factor


def aux_losses(cfg, logits, scores, idx, device_of_expert):
    """Expert balance, device balance and z-loss over the batch (step 7), unweighted."""
    tokens, experts = scores.shape
    f = experts / (cfg.top_k * tokens) * torch.bincount(idx.flatten(), minlength=experts).double()
    p = scores.mean(0)
    device_terms = []
    for d in sorted(set(device_of_expert)):
        members = [e for e, owner in enumerate(device_of_expert) if owner == d]
        device_terms.append(f[members].mean() * p[members].sum())
    z_loss = (torch.logsumexp(logits, -1) ** 2).mean()
    return (f * p).sum(), torch.stack(device_terms).sum(), z_loss


def forward(cfg, weights, x, device_of_expert):
    """y [T, H] and the three aux losses (None for an empty batch) of the whole layer (step 6).

    weights: float64 tensors by Hugging Face name, every routed expert included."""
    logits = x @ weights["gate.weight"].T
    scores, idx, routing_weights = route(cfg, logits, weights.get("gate.e_score_correction_bias"))
    y = swiglu(x, weights, "shared_experts.") if cfg.num_shared > 0 else torch.zeros_like(x)
    for e in range(cfg.num_experts):
        rows, slots = (idx == e).nonzero(as_tuple=True)
        out = swiglu(x[rows], weights, f"experts.{e}.")
        y = y.index_add(0, rows, routing_weights[rows, slots, None] * out)
    aux = aux_losses(cfg, logits, scores, idx, device_of_expert) if x.shape[0] > 0 else None
    return y, aux


def gradients(cfg, weights, x, grad_y, device_of_expert):
    """Backward of the global objective sum(y * grad_y) + the weighted aux losses, in float64.

    Returns (y, aux, x64, weights64): x64.grad and every weights64[name].grad hold the gradients."""
    weights64 = {k: v.double().requires_grad_() for k, v in weights.items()}
    x64 = x.double().requires_grad_()
    y, aux = forward(cfg, weights64, x64, device_of_expert)
    loss = (y * grad_y.double()).sum()
    if aux is not None:
        alphas = (cfg.aux_expert_alpha, cfg.aux_device_alpha, cfg.z_loss_alpha)
        loss = loss + sum(a * term for a, term in zip(alphas, aux))
    loss.backward()
    return y.detach(), aux, x64, weights64
