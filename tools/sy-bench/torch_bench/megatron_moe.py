"""The MoE layer a PyTorch user would otherwise pick: an expert-parallel layer in the style of
Megatron-Core (TopKRouter, MoEAlltoAllTokenDispatcher, SequentialMLP, shared experts; dropless),
written in plain PyTorch from Megatron-Core's documented design. It is switchyard's benchmark
baseline, so it follows DESIGN.md's routing semantics for softmax scoring without groups or
selection bias, and holds its parameters under Hugging Face's DeepSeek names (those of
switchyard.MoELayer), so that one state dict loads into both.

Per rank, as Megatron-Core's all-to-all dispatcher does it:
  router: logits = x gate^T, s = softmax, top-k of s, weights from s (optionally normalised);
          switch-style aux loss sum_i f_i P_i over this rank's tokens, attached to the output
          with its coefficient (0 by default) as MoEAuxLossAutoScaler does;
  counts: tokens per expert all-gathered over the ranks, giving the all-to-all split sizes;
  permute: token copies sorted by expert (stable), all_to_all_single to the experts' owners,
          received chunks regrouped from (source rank, expert) to (expert, source rank);
  experts: one SwiGLU per local expert, down(silu(gate(x)) * up(x)), over its rows;
  back:   the inverse regrouping, all_to_all_single back, unpermute weighting each copy by its
          routing weight and summing per token; plus the shared experts, one SwiGLU of width S*I.
Routed experts are placed in contiguous blocks of E / world per rank (Megatron-Core's expert
parallel layout, and switchyard's default placement).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _AllToAll(torch.autograd.Function):
    """all_to_all_single with uneven splits; its backward is the same exchange reversed."""

    @staticmethod
    def forward(ctx, x, output_splits, input_splits):
        ctx.splits = (output_splits, input_splits)
        return _exchange(x, output_splits, input_splits)

    @staticmethod
    def backward(ctx, grad):
        output_splits, input_splits = ctx.splits
        return _exchange(grad, input_splits, output_splits), None, None


def _exchange(x, output_splits, input_splits):
    out = x.new_empty((sum(output_splits), x.shape[1]))
    dist.all_to_all_single(out, x.contiguous(), output_splits, input_splits)
    return out


class _AuxLossScaler(torch.autograd.Function):
    """Returns the output unchanged; backward hands the aux loss a gradient of its coefficient,
    so that the loss trains the router without being added to the model's loss."""

    @staticmethod
    def forward(ctx, output, aux_loss, coefficient):
        ctx.coefficient = coefficient
        return output

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.full((), ctx.coefficient), None


def _linear(out_features, in_features):
    # The weights are loaded from switchyard's layer, so their random initialisation is skipped.
    return nn.utils.skip_init(nn.Linear, in_features, out_features, bias=False)


class SwiGLU(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = _linear(intermediate, hidden)
        self.up_proj = _linear(intermediate, hidden)
        self.down_proj = _linear(hidden, intermediate)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MegatronStyleMoE(nn.Module):
    """Expert-parallel MoE layer over the default torch.distributed process group.

    Every rank holds experts [rank * E / world, (rank + 1) * E / world); E must divide by the
    world size, as Megatron-Core requires. forward(x [T, H]) -> y [T, H] is collective. The
    gradients of the replicated parameters (gate, shared experts) are this rank's alone: sum them
    over ranks with GradAllReduce, as DistributedDataParallel would.
    """

    def __init__(self, hidden, num_experts, top_k, intermediate, num_shared,
                 norm_topk_prob=False, routed_scaling_factor=1.0, aux_loss_coeff=0.0):
        super().__init__()
        world, rank = dist.get_world_size(), dist.get_rank()
        if num_experts % world:
            raise ValueError(f"{num_experts} experts do not split into equal blocks over {world} "
                             "ranks; pick a rank count that divides the expert count")
        self.num_experts, self.top_k = num_experts, top_k
        self.norm_topk_prob, self.routed_scaling_factor = norm_topk_prob, routed_scaling_factor
        self.aux_loss_coeff = aux_loss_coeff
        self.world, self.num_local = world, num_experts // world
        self.first_expert = rank * self.num_local
        self.expert_ids = list(range(self.first_expert, self.first_expert + self.num_local))
        self.gate = _linear(num_experts, hidden)
        self.shared_experts = SwiGLU(hidden, num_shared * intermediate) if num_shared else None
        self.experts = nn.ModuleDict({str(e): SwiGLU(hidden, intermediate)
                                      for e in self.expert_ids})

    def replicated_parameters(self):
        """The parameters every rank holds a copy of, whose gradients are summed over ranks."""
        shared = list(self.shared_experts.parameters()) if self.shared_experts else []
        return [self.gate.weight, *shared]

    def route(self, x):
        """Expert ids [T, K], routing weights [T, K] and the aux loss of this rank's tokens."""
        scores = torch.softmax(self.gate(x), dim=-1)
        weights, idx = torch.topk(scores, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdim=True)
        tokens_per_expert = torch.bincount(idx.flatten(), minlength=self.num_experts)
        # sum_i f_i P_i with f_i = E / (K T) count_i and P_i = mean_t s_ti.
        aux = (scores.sum(0) * tokens_per_expert).sum() * (
            self.num_experts / (self.top_k * x.shape[0] ** 2))
        return idx, weights * self.routed_scaling_factor, tokens_per_expert, aux

    def split_sizes(self, tokens_per_expert):
        """All-to-all split sizes from every rank's counts: rows sent to each rank, rows received
        from each rank, and the received rows per (source rank, local expert)."""
        counts = [torch.empty_like(tokens_per_expert) for _ in range(self.world)]
        dist.all_gather(counts, tokens_per_expert)
        to_me = torch.stack(counts)[:, self.first_expert:self.first_expert + self.num_local]
        input_splits = tokens_per_expert.view(self.world, self.num_local).sum(1).tolist()
        return input_splits, to_me.sum(1).tolist(), to_me

    def forward(self, x):
        idx, weights, tokens_per_expert, aux = self.route(x)
        input_splits, output_splits, to_me = self.split_sizes(tokens_per_expert)

        # Copy t*K + k of token t goes to expert idx[t, k]; sorting stably by expert groups the
        # copies by destination rank, then expert.
        order = torch.argsort(idx.flatten(), stable=True)
        rows = x.index_select(0, order // self.top_k)
        rows = self._all_to_all(rows, output_splits, input_splits)
        # Received: chunks per (source rank, local expert); the experts want theirs contiguous.
        by_source = to_me.flatten().tolist()
        by_expert = to_me.t().flatten().tolist()
        rows = _regroup(rows, by_source, self.world, self.num_local)
        outs = [self.experts[str(e)](chunk)
                for e, chunk in zip(self.expert_ids, rows.split(to_me.sum(0).tolist()))]
        rows = _regroup(torch.cat(outs), by_expert, self.num_local, self.world)
        rows = self._all_to_all(rows, input_splits, output_splits)

        copies = torch.zeros_like(rows)
        copies.index_copy_(0, order, rows)
        y = (copies.view(-1, self.top_k, x.shape[1]) * weights.unsqueeze(-1)).sum(1)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return _AuxLossScaler.apply(y, aux, self.aux_loss_coeff)

    def _all_to_all(self, rows, output_splits, input_splits):
        # One rank keeps every expert: no exchange (Megatron-Core skips it too).
        return rows if self.world == 1 else _AllToAll.apply(rows, output_splits, input_splits)


def _regroup(rows, sizes, outer, inner):
    """Chunks stored (outer, inner)-major with the given sizes, reordered (inner, outer)-major."""
    if outer == 1 or inner == 1:
        return rows
    chunks = rows.split(sizes)
    return torch.cat([chunks[o * inner + i] for i in range(inner) for o in range(outer)])
