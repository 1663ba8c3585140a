"""MoELayer: the expert-parallel DeepSeekMoE layer as a torch.nn.Module.

The parameters live in torch (so optimisers, state dicts and hooks work as usual) under Hugging
Face's DeepSeek names; the C layer holds a copy that is refreshed from them before every forward,
and its gradients are handed to autograd, which accumulates them into `.grad`.
"""

import math
import zlib

import torch
from torch import nn

from .handles import Context, Layer

_BIAS = "gate.e_score_correction_bias"


class _Projection(nn.Module):
    """A weight [out, in] named like nn.Linear(bias=False), so that state-dict keys are Hugging
    Face's; never called: the C layer computes with it."""

    def __init__(self, out_features, in_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))


class _SwiGLU(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = _Projection(intermediate, hidden)
        self.up_proj = _Projection(intermediate, hidden)
        self.down_proj = _Projection(hidden, intermediate)


class _Gate(nn.Module):
    def __init__(self, num_experts, hidden, selection_bias):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden))
        if selection_bias:
            # Moved by update_selection_bias, never by gradients: a buffer, as in transformers.
            self.register_buffer("e_score_correction_bias", torch.zeros(num_experts))


class _MoEFunction(torch.autograd.Function):
    """y = layer(x), with the parameters as inputs so that autograd delivers their gradients."""

    @staticmethod
    def forward(ctx, module, names, x, *params):
        layer = module._layer
        for name, param in zip(names, params):
            layer.set_param(name, param)
        if module.config.selection_bias:
            layer.set_param(_BIAS, module.gate.e_score_correction_bias)
        x = x.contiguous()
        y = torch.empty_like(x)
        ctx.saved_state, module.last_aux = layer.forward(x, y)
        ctx.layer, ctx.names = layer, names
        # Saved only for autograd's check that no parameter changed in place before backward
        # (the C layer's backward uses the values pushed above).
        ctx.save_for_backward(*params)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        params = ctx.saved_tensors
        saved, ctx.saved_state = ctx.saved_state, None
        if saved is None:
            raise RuntimeError("switchyard: backward twice through one MoELayer forward "
                               "(retain_graph) is not supported")
        grad_x = torch.empty_like(grad_y)
        # The layer accumulates; zeroing first leaves exactly this call's gradients to hand on.
        ctx.layer.zero_grads()
        ctx.layer.backward(saved, grad_y.contiguous(), grad_x)
        saved.close()
        grads = [ctx.layer.get_grad(name, p.shape) if needed else None
                 for name, p, needed in zip(ctx.names, params, ctx.needs_input_grad[3:])]
        return (None, None, grad_x, *grads)


class MoELayer(nn.Module):
    """An expert-parallel DeepSeekMoE layer (switchyard's C library) as a torch module.

    Every rank of the context's communicator builds one with the same config and calls it
    together: forward and backward are collective (each rank passes its own tokens, possibly
    none) and every rank must backpropagate through every forward it made, in the same order.
    Tensors are float32 on the CPU, shaped [..., hidden].

    Parameters, in Hugging Face's DeepSeek naming: `gate.weight` [E, H];
    `shared_experts.{gate,up,down}_proj.weight` (the shared experts as one SwiGLU of width S*I);
    `experts.<e>.{gate,up,down}_proj.weight` only for the routed experts this rank holds
    (`expert_ids`); and, with selection_bias, the buffer `gate.e_score_correction_bias`.
    Gradients of the replicated parameters (the gate and the shared experts) are already summed
    over all ranks by the C layer: do not all-reduce them again. The routed experts' gradients
    hold every rank's tokens too. So the gradients are those of the sum of every rank's loss.

    After each forward, `last_aux` holds the unweighted aux losses of the global batch (floats,
    for logging): their gradients, weighted by the config's alphas, are added in backward.

    Parameters start from `seed` (U(±1/sqrt(fan_in)), as nn.Linear), each tensor from its own
    generator seeded by its name, so that they agree on every rank and for any number of ranks.
    """

    def __init__(self, config, context=None, seed=0):
        super().__init__()
        self.config = config
        self.context = context if context is not None else Context()
        self._layer = Layer(self.context, config)
        self.expert_ids = self._layer.local_experts()
        h, i = config.hidden, config.intermediate
        self.gate = _Gate(config.num_experts, h, config.selection_bias)
        if config.num_shared > 0:
            self.shared_experts = _SwiGLU(h, config.num_shared * i)
        self.experts = nn.ModuleDict({str(e): _SwiGLU(h, i) for e in self.expert_ids})
        self.last_aux = None
        self.reset_parameters(seed)

    def reset_parameters(self, seed):
        with torch.no_grad():
            for name, param in self.named_parameters():
                generator = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(name.encode()))
                bound = 1.0 / math.sqrt(param.shape[1])
                param.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise TypeError(f"switchyard.MoELayer: x must be float32 on the CPU, got {x.dtype} "
                            f"on {x.device}")
        names, params = zip(*self.named_parameters())
        y = _MoEFunction.apply(self, names, x.reshape(-1, x.shape[-1]), *params)
        return y.reshape(x.shape)

    def load_hf_state_dict(self, state_dict, prefix=""):
        """Copies this rank's tensors from a dict of Hugging Face-named tensors.

        prefix: the layer's key prefix in the dict, e.g. "model.layers.3.mlp.". Every parameter
        this rank holds must be present (KeyError names the missing ones); other keys (experts
        held by other ranks, other layers) are ignored. The selection bias is loaded when present.
        """
        own = dict(self.named_parameters())
        missing = [prefix + name for name in own if prefix + name not in state_dict]
        if missing:
            raise KeyError(f"switchyard.MoELayer.load_hf_state_dict: missing {missing}")
        if self.config.selection_bias and prefix + _BIAS in state_dict:
            own[_BIAS] = self.gate.e_score_correction_bias
        with torch.no_grad():
            for name, target in own.items():
                source = state_dict[prefix + name]
                if source.shape != target.shape:
                    raise ValueError(f"switchyard.MoELayer.load_hf_state_dict: '{prefix + name}' "
                                     f"has shape {tuple(source.shape)}, expected "
                                     f"{tuple(target.shape)}")
                target.copy_(source)

    def expert_load(self):
        """Tokens routed to each expert by the last forward, summed over ranks: float64 [E]."""
        return self._layer.expert_load(self.config.num_experts)

    def update_selection_bias(self):
        """Aux-loss-free balancing step from the last forward's global loads (selection_bias)."""
        self._layer.update_selection_bias()
        if self.config.selection_bias:
            self.gate.e_score_correction_bias.copy_(
                self._layer.get_param(_BIAS, self.gate.e_score_correction_bias.shape))
