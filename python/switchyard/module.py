"""MoELayer: the expert-parallel DeepSeekMoE layer as a torch.nn.Module.

The parameters and their gradients live in torch (so optimisers and state dicts work as usual)
under Hugging Face's DeepSeek names, and the C layer works on that memory in place: it reads each
parameter from the tensor's storage and its backward adds straight into `.grad`, so no step copies
a parameter or a gradient. The storage is bound once (sy_layer_bind_param / sy_layer_bind_grad)
and bound again only when torch replaced it (`p.data = ...`, `module.to(...)`, `p.grad = ...`,
`zero_grad(set_to_none=True)`); a `.grad` that is None is created uninitialised and bound fresh
(sy_layer_bind_fresh_grad), so that the backward writes it instead of adding onto zeros, as
autograd does. Writes to the parameters are reported to the C layer from torch's
version counters (sy_layer_params_changed), so that bf16 compute converts the weights once per
update (an optimizer step), not at every forward.
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


class _Experts(nn.ModuleDict):
    """The routed experts this rank holds, keyed by global expert id. A state dict holds the
    experts of whichever ranks wrote it (see merge_state_dicts); loading takes the ones held here
    and passes over the others instead of calling them unexpected, so that a state dict moves
    between expert-parallel sizes. Experts held here must be present (strict loading)."""

    def __init__(self, modules, num_experts):
        super().__init__(modules)
        self._num_experts = num_experts

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        before = len(unexpected_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

        def held_elsewhere(key):
            head = key[len(prefix):].split(".", 1)[0]
            return head.isdigit() and int(head) < self._num_experts and head not in self

        unexpected_keys[before:] = [k for k in unexpected_keys[before:] if not held_elsewhere(k)]


def merge_state_dicts(*state_dicts):
    """One state dict from the state dicts of several ranks' MoELayers (each holds its own routed
    experts, keyed by global id, and the replicated tensors): loadable by a MoELayer on any number
    of ranks. A key in several dicts (a replicated tensor, a replicated expert) must hold equal
    values (ValueError names it)."""
    merged = {}
    for state_dict in state_dicts:
        for key, value in state_dict.items():
            if key in merged and not torch.equal(merged[key], value):
                raise ValueError(f"switchyard.merge_state_dicts: '{key}' differs between the "
                                 "state dicts; they are not of one model at one step")
            merged.setdefault(key, value)
    return merged


class _MoEFunction(torch.autograd.Function):
    """y = layer(x). The parameters are inputs so that autograd tells which need a gradient and
    checks that none changed in place before backward; their gradients are not returned: the C
    backward has already added them to `.grad`."""

    @staticmethod
    def forward(ctx, module, names, x, *params):
        module._bind_params()
        layer = module._layer
        module._push_selection_bias()
        x = x.contiguous()
        y = torch.empty_like(x)
        ctx.saved_state, module.last_aux = layer.forward(x, y)
        ctx.module, ctx.names = module, names
        # The C backward reads the parameters from torch's memory: autograd's version check on
        # these refuses a backward after they changed in place (e.g. an optimizer step).
        ctx.save_for_backward(*params)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        ctx.saved_tensors  # raises if a parameter was modified in place since forward
        saved, ctx.saved_state = ctx.saved_state, None
        if saved is None:
            raise RuntimeError("switchyard: backward twice through one MoELayer forward "
                               "(retain_graph) is not supported")
        needs = ctx.needs_input_grad[3:]
        created = ctx.module._bind_grads(ctx.names, needs)
        grad_x = torch.empty_like(grad_y)
        try:
            ctx.module._layer.backward(saved, grad_y.contiguous(), grad_x)
        except BaseException:
            # As autograd, which makes no .grad when the backward fails: the fresh ones this
            # backward was to write hold nothing meaningful.
            for param in created:
                param.grad = None
            raise
        finally:
            saved.close()
        return (None, None, grad_x) + (None,) * len(needs)


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
    State dicts are keyed by global expert id, so they move between expert-parallel sizes:
    `merge_state_dicts` joins those of every rank, and `load_state_dict` takes the experts held
    here from a state dict written on any number of ranks (those held elsewhere are passed over).
    `save_checkpoint` / `load_checkpoint` do the same through sharded files (docs/checkpoints.md).
    Gradients of the replicated parameters (the gate and the shared experts) are already summed
    over all ranks by the C layer: do not all-reduce them again. The routed experts' gradients
    hold every rank's tokens too. So the gradients are those of the sum of every rank's loss.

    The C layer reads the parameters' and writes the gradients' own memory (see the module
    docstring). It learns of writes to the parameters from torch's version counters, which every
    in-place torch operation on them bumps (optimizer steps, `load_state_dict`, `p.mul_()` under
    no_grad); a write through `p.data` bumps none (as autograd, which does not see it either): call
    `parameters_changed()` after one, or bf16 compute goes on with the weights it converted
    before. Backward adds into `.grad` as autograd would (writing a new one when it is None),
    but does so itself, so tensor hooks on the parameters (`register_hook`) do not see these
    gradients. A parameter with requires_grad False gets none. Parameters must stay float32 on
    the CPU; a non-contiguous one is made contiguous (`p.data = p.data.contiguous()`).

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
        # Writes to the parameters are reported from their version counters (_bind_params).
        self._layer.report_param_changes()
        self._param_versions = None
        self._bias_version = None
        self.expert_ids = self._layer.local_experts()
        h, i = config.hidden, config.intermediate
        self.gate = _Gate(config.num_experts, h, config.selection_bias)
        if config.num_shared > 0:
            self.shared_experts = _SwiGLU(h, config.num_shared * i)
        self.experts = _Experts({str(e): _SwiGLU(h, i) for e in self.expert_ids},
                                config.num_experts)
        self.last_aux = None
        self.reset_parameters(seed)
        self._bind_params()  # now, so that the C layer frees its own parameter storage at once

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

    def _bind_params(self):
        """Points the C layer at every parameter's storage, binding again the ones whose storage
        torch replaced since they were bound, and reports writes made since the last call."""
        versions = []
        for name, param in self.named_parameters():
            if not param.is_contiguous():
                param.data = param.data.contiguous()  # the C layer reads a dense row-major array
            bound = self._layer.bound("param", name)
            if bound is None or bound.data_ptr() != param.data_ptr():
                self._layer.bind_param(name, param)
            versions.append(param._version)
        if versions != self._param_versions:
            self._layer.params_changed()
            self._param_versions = versions

    def parameters_changed(self):
        """Says that parameters (or the selection bias) were written where torch's version
        counters do not see it (through `p.data`, or by another library on their memory): the
        next forward reads them anew (bf16 compute converts the weights again). Local; in-place
        torch operations need no such call."""
        self._layer.params_changed()
        self._bias_version = None

    def _push_selection_bias(self):
        """The C layer keeps its own E floats of selection bias (they cannot be bound): copied in
        when torch's buffer changed since (a copy counts as a parameter change in the C layer)."""
        if not self.config.selection_bias:
            return
        bias = self.gate.e_score_correction_bias
        if bias._version != self._bias_version:
            self._layer.set_param(_BIAS, bias)
            self._bias_version = bias._version

    def _pull_selection_bias(self):
        """The C layer changed its selection bias (a balancing step, a load): copied out."""
        if self.config.selection_bias:
            bias = self.gate.e_score_correction_bias
            with torch.no_grad():
                bias.copy_(self._layer.get_param(_BIAS, bias.shape))
            self._bias_version = bias._version

    def _bind_grads(self, names, needs):
        """Before a backward: the gradient of each parameter that needs one goes into its .grad;
        the others' into the C layer's own storage, so that a frozen parameter's .grad is left
        alone. A .grad that is None is created uninitialised and bound fresh: the C backward
        writes it (as autograd writes a new .grad) instead of adding onto zeros. Returns the
        parameters whose .grad was created."""
        params = dict(self.named_parameters())
        created = []
        for name, needed in zip(names, needs):
            param, bound = params[name], self._layer.bound("grad", name)
            if not needed:
                if bound is not None:
                    self._layer.unbind_grad(name)
                continue
            if param.grad is None:
                # Binding the new tensor releases the old one this layer still held, so the
                # allocator can reuse it for the next parameter's: the heap needs no room for
                # two sets of gradients (it did when these were all made before any was rebound).
                param.grad = torch.empty_like(param)
                self._layer.bind_grad(name, param.grad, fresh=True)
                created.append(param)
                continue
            if not param.grad.is_contiguous():
                param.grad = param.grad.contiguous()
            if bound is None or bound.data_ptr() != param.grad.data_ptr():
                self._layer.bind_grad(name, param.grad)
        return created

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

    def save_checkpoint(self, directory, step):
        """Writes the parameters and selection bias as directory/step-<step>, one file per rank
        that is the first holder of some routed experts, keyed by global expert id, atomically
        (docs/checkpoints.md); the optimizer's state is torch's to save. Collective."""
        self._bind_params()
        self._push_selection_bias()
        self._layer.save(directory, step)

    def load_checkpoint(self, path):
        """Reads a checkpoint written by save_checkpoint (or sy_layer_save, or train_moe in
        fp32), on this or another number of ranks, into the parameters in place: each rank reads
        the experts it holds. Returns its step. Collective; on failure on any rank it raises on
        every rank and changes nothing."""
        self._bind_params()
        step = self._layer.load(path, keep_placement=True)
        self._pull_selection_bias()
        return step

    def expert_load(self):
        """Tokens routed to each expert by the last forward, summed over ranks: float64 [E]."""
        return self._layer.expert_load(self.config.num_experts)

    def update_selection_bias(self):
        """Aux-loss-free balancing step from the last forward's global loads (selection_bias)."""
        self._layer.update_selection_bias()
        self._pull_selection_bias()
