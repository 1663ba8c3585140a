"""Swap the MoE blocks of a DeepSeek-style PyTorch model for switchyard.MoELayer.

A small decoder written here in the shape of Hugging Face's DeepSeek-V3 (`modeling_deepseek`):
embeddings, decoder layers of RMSNorm -> causal self-attention -> RMSNorm -> MLP, the first layer's
MLP dense and the others' a DeepSeekMoE block (sigmoid router with the selection bias, V3's
group-limited top-k, normalised and scaled weights, one shared expert), final norm, LM head. Its
parameters carry Hugging Face's names (`model.layers.1.mlp.gate.weight`,
`model.layers.1.mlp.experts.3.up_proj.weight`, `model.layers.1.mlp.shared_experts.down_proj.weight`,
...). Attention is plain multi-head attention without rotary embeddings (not MLA): only the MoE
block matters here.

The example builds the reference model (every rank holds every expert: data parallel), copies it,
replaces each MoE block of the copy by a switchyard.MoELayer (each rank holds its share of the
routed experts: expert parallel), loads the reference's state dict into the copy (strict: the names
match, and each MoELayer takes the experts it holds), then

  1. checks that both models' logits and every gradient agree on each rank's own tokens,
  2. trains both with Adam for a few steps on the same batches and checks that the losses agree,

printing the largest relative errors (in norm, over tensors and ranks). Exit status 1 when a figure
exceeds its tolerance (--tolerance ...). Run on 2 ranks:

    mpirun -np 2 /usr/bin/python3 examples/deepseek_swap/swap.py

(as root, OpenMPI also needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). switchyard
is imported as installed (pip install .), else from this checkout's python/ folder.
"""

import argparse
import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from mpi4py import MPI  # initialises MPI; launch with mpirun
from torch import nn

try:
    import switchyard
except ModuleNotFoundError as e:  # not installed: the checkout's package
    if e.name != "switchyard":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import switchyard


@dataclass
class DeepseekConfig:
    """The fields of Hugging Face's DeepseekV3Config that this model uses, with its names."""

    vocab_size: int = 96
    hidden_size: int = 64
    intermediate_size: int = 128  # the dense MLP of the first layers
    num_hidden_layers: int = 3
    first_k_dense_replace: int = 1  # layers [0, k) dense, the rest MoE
    num_attention_heads: int = 4
    n_routed_experts: int = 8
    num_experts_per_tok: int = 3
    moe_intermediate_size: int = 32
    n_shared_experts: int = 1
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"  # V3: selection bias, groups scored by their top-2 sum
    n_group: int = 4
    topk_group: int = 2
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 2.5
    rms_norm_eps: float = 1e-6


def moe_config(cfg, **options):
    """switchyard's MoEConfig for the MoE blocks of a Hugging Face DeepSeek config."""
    return switchyard.MoEConfig(
        hidden=cfg.hidden_size, num_experts=cfg.n_routed_experts, top_k=cfg.num_experts_per_tok,
        intermediate=cfg.moe_intermediate_size, num_shared=cfg.n_shared_experts,
        scoring=cfg.scoring_func, norm_topk_prob=cfg.norm_topk_prob,
        routed_scaling_factor=cfg.routed_scaling_factor, n_group=cfg.n_group,
        topk_group=cfg.topk_group,
        # V3 (noaux_tc): bias-corrected selection, group score = top-2 sum; V2: group max.
        selection_bias=cfg.topk_method == "noaux_tc",
        group_score="top2_sum" if cfg.topk_method == "noaux_tc" else "max", **options)


# ---- the reference model, Hugging Face style ----

class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); a dense MLP, an expert, or the shared experts."""

    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TopkRouter(nn.Module):
    """DeepSeek-V3's gate: sigmoid scores, the selection bias (a buffer, moved by the balancing
    rule, never by gradients), group-limited top-k; weights normalised and scaled."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))

    def forward(self, x):
        cfg = self.cfg
        scores = F.linear(x, self.weight).sigmoid()
        choice = scores.detach() + self.e_score_correction_bias
        groups = choice.view(-1, cfg.n_group, cfg.n_routed_experts // cfg.n_group)
        group_scores = groups.topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(group_scores).scatter_(
            1, group_scores.topk(cfg.topk_group, dim=-1).indices, 1.0)
        mask = keep.repeat_interleave(groups.shape[-1], dim=1).bool()
        idx = choice.masked_fill(~mask, float("-inf")).topk(cfg.num_experts_per_tok, dim=-1).indices
        weights = scores.gather(1, idx)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return idx, weights * cfg.routed_scaling_factor


class DeepseekMoE(nn.Module):
    """The MoE block (`mlp` of layers >= first_k_dense_replace), every routed expert held here."""

    def __init__(self, cfg):
        super().__init__()
        self.gate = TopkRouter(cfg)
        self.experts = nn.ModuleList(MLP(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.n_routed_experts))
        self.shared_experts = MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)

    def forward(self, hidden_states):
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        idx, weights = self.gate(x)
        y = self.shared_experts(x)
        for e, expert in enumerate(self.experts):
            rows, slots = (idx == e).nonzero(as_tuple=True)
            y = y.index_add(0, rows, weights[rows, slots, None] * expert(x[rows]))
        return y.reshape(shape)


class Attention(nn.Module):
    """Causal multi-head self-attention (no rotary embedding, no MLA)."""

    def __init__(self, cfg):
        super().__init__()
        h = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(h, h, bias=False) for _ in range(4))

    def forward(self, x):
        b, t, h = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        attn = scores.masked_fill(causal, float("-inf")).softmax(-1)
        return self.o_proj((attn @ v).transpose(1, 2).reshape(b, t, h))


class DecoderLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = (MLP(cfg.hidden_size, cfg.intermediate_size)
                    if index < cfg.first_k_dense_replace else DeepseekMoE(cfg))

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class DeepseekModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class DeepseekForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.model = DeepseekModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        with torch.no_grad():
            self.model.layers.apply(_init_router)

    def forward(self, tokens):
        return self.lm_head(self.model(tokens))


def _init_router(module):
    if isinstance(module, TopkRouter):
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))  # as nn.Linear
        module.e_score_correction_bias.uniform_(-0.05, 0.05)  # as if balancing had moved it


# ---- the swap ----

def swap_moe_blocks(model, context, **options):
    """Replaces every DeepseekMoE block of `model` by a switchyard.MoELayer over `context`, in
    place; the new blocks start from their own initialisation: load the weights afterwards."""
    for layer in model.model.layers:
        if isinstance(layer.mlp, DeepseekMoE):
            layer.mlp = switchyard.MoELayer(moe_config(model.config, **options), context)
    return model


def is_moe(name):
    return ".mlp.gate." in name or ".mlp.experts." in name or ".mlp.shared_experts." in name


# ---- the comparison ----

def relative_error(got, want):
    scale = want.double().norm().item()
    return (got.double() - want.double()).norm().item() / scale if scale > 0 else 0.0


def batch(generator, successors, sequences, length):
    """Token sequences where each next token is one of two fixed successors of the current one
    (3/4 and 1/4), and the targets (the sequences shifted by one)."""
    tokens = torch.empty(sequences, length + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(successors.shape[1], (sequences,), generator=generator)
    for t in range(length):
        second = (torch.rand(sequences, generator=generator) < 0.25).long()
        tokens[:, t + 1] = successors[second, tokens[:, t]]
    return tokens[:, :-1], tokens[:, 1:]


def step_loss(model, tokens, targets, global_tokens):
    """This rank's share of the global batch's mean cross-entropy (the ranks' shares sum to it)."""
    logits = model(tokens)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           reduction="sum") / global_tokens
    return logits, loss


def allreduce_grads(comm, params):
    for p in params:
        if p.grad is None:  # no token of this rank reached it
            p.grad = torch.zeros_like(p)
        comm.Allreduce(MPI.IN_PLACE, p.grad.numpy(), op=MPI.SUM)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps (10)")
    parser.add_argument("--sequences", type=int, default=4, help="sequences per rank (4)")
    parser.add_argument("--length", type=int, default=16, help="tokens per sequence (16)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--overlap", choices=["off", "on"], default="off",
                        help="pipeline the all-to-all with expert compute")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative error allowed in logits, gradients and losses")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    def say(*text):
        if rank == 0:
            print(*text, flush=True)

    cfg = DeepseekConfig()
    torch.manual_seed(0)  # the same model and task on every rank
    reference = DeepseekForCausalLM(cfg)
    successors = torch.stack([torch.randperm(cfg.vocab_size), torch.randperm(cfg.vocab_size)])
    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches
    global_tokens = size * args.sequences * args.length

    with switchyard.Context(comm, timeout_ms=60000) as context:
        swapped = swap_moe_blocks(copy.deepcopy(reference), context, overlap=args.overlap)
        swapped.load_state_dict(reference.state_dict())  # strict: every name matches
        layer1 = swapped.model.layers[1].mlp
        say(f"{size} ranks; MoE layers {cfg.first_k_dense_replace}..{cfg.num_hidden_layers - 1} "
            f"swapped for switchyard.MoELayer; experts held per rank: "
            f"{comm.allgather(layer1.expert_ids)}")
        ref_params = dict(reference.named_parameters())
        swap_params = dict(swapped.named_parameters())
        # The MoE blocks' gradients arrive summed over ranks; everything else is replicated
        # (data parallel) and all-reduced here, as is every parameter of the reference.
        replicated = [p for name, p in swap_params.items() if not is_moe(name)]
        ref_opt = torch.optim.Adam(reference.parameters(), lr=args.lr)
        swap_opt = torch.optim.Adam(swapped.parameters(), lr=args.lr)

        failures = []
        losses = []
        for step in range(args.steps + 1):
            tokens, targets = batch(generator, successors, args.sequences, args.length)
            ref_opt.zero_grad()
            swap_opt.zero_grad()
            ref_logits, ref_loss = step_loss(reference, tokens, targets, global_tokens)
            swap_logits, swap_loss = step_loss(swapped, tokens, targets, global_tokens)
            ref_loss.backward()
            swap_loss.backward()
            allreduce_grads(comm, ref_params.values())
            allreduce_grads(comm, replicated)
            losses.append((comm.allreduce(ref_loss.item()), comm.allreduce(swap_loss.item())))
            if step == 0:
                # 1. Same weights: logits and every gradient (this rank's experts) agree.
                logit_err = max(comm.allgather(relative_error(swap_logits.detach(),
                                                              ref_logits.detach())))
                grad_errs = {name: relative_error(p.grad, ref_params[name].grad)
                             for name, p in swap_params.items()}
                worst_local = max(grad_errs.items(), key=lambda kv: kv[1])
                worst = max(comm.allgather(worst_local), key=lambda kv: kv[1])
                moe_err = max(comm.allgather(max(e for n, e in grad_errs.items() if is_moe(n))))
                say(f"same weights: logits max relative error {logit_err:.2e}; gradients of "
                    f"{len(grad_errs)} tensors per rank: max relative error {worst[1]:.2e} "
                    f"({worst[0]}), MoE blocks' {moe_err:.2e}")
                failures += [f"logits {logit_err:.2e}"] * (logit_err > args.tolerance)
                failures += [f"gradient {worst[0]} {worst[1]:.2e}"] * (worst[1] > args.tolerance)
                say(f"training both with Adam (lr {args.lr}) for {args.steps} steps, "
                    f"{global_tokens} tokens per step:")
                continue  # the first batch checks the gradients; training starts below
            ref_opt.step()
            swap_opt.step()
            ref_l, swap_l = losses[-1]
            say(f"  step {step:2d}  loss reference {ref_l:.6f}  switchyard {swap_l:.6f}  "
                f"relative difference {abs(swap_l - ref_l) / ref_l:.1e}")

        loss_err = max(abs(s - r) / r for r, s in losses)
        param_err = max(comm.allgather(max(relative_error(p.detach(), ref_params[n].detach())
                                           for n, p in swap_params.items())))
        say(f"losses: max relative difference {loss_err:.2e} over {len(losses)} steps; "
            f"loss {losses[1][0]:.4f} -> {losses[-1][0]:.4f}; parameters after training: max "
            f"relative difference {param_err:.2e}")
        failures += [f"loss {loss_err:.2e}"] * (loss_err > args.tolerance)
        failures += [f"parameters {param_err:.2e}"] * (param_err > args.tolerance)
        if args.steps > 0 and not losses[-1][0] < losses[1][0]:
            failures.append(f"the loss did not fall ({losses[1][0]:.4f} -> {losses[-1][0]:.4f})")
    if failures:
        say(f"FAILED (tolerance {args.tolerance:g}): " + "; ".join(failures))
        return 1
    say(f"agreement within {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
