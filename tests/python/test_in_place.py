"""The C layer works on torch's own memory: it reads each parameter from its storage and adds each
gradient into `.grad`, with no copy per step, binds again when torch replaces a tensor, and keeps
autograd's `.grad` semantics over several backward calls."""

import pytest
import torch

import switchyard

CONFIG = dict(hidden=8, num_experts=4, top_k=2, intermediate=4, num_shared=1)


@pytest.fixture
def layer(context):
    return switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context, seed=5)


def batch(seed, tokens=5):
    return torch.randn(tokens, CONFIG["hidden"], generator=torch.Generator().manual_seed(seed))


def gradients(layer, x):
    """The parameter gradients of one forward/backward of sum(layer(x)), from no gradient."""
    layer.zero_grad(set_to_none=True)
    layer(x).sum().backward()
    return {name: p.grad.clone() for name, p in layer.named_parameters()}


def test_the_c_layer_reads_and_writes_torch_storage(layer):
    c = layer._layer
    for name, p in layer.named_parameters():
        assert c.param_data(name) == (p.data_ptr(), p.numel()), name
    layer(batch(1)).sum().backward()
    grads = {name: p.grad for name, p in layer.named_parameters()}
    for name, g in grads.items():
        assert c.grad_data(name) == (g.data_ptr(), g.numel()), name
    # A second backward adds into the same tensors: nothing was swapped in or copied out.
    layer(batch(2)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is grads[name] and c.grad_data(name)[0] == p.grad.data_ptr(), name

    # An in-place change in torch is what the C layer holds, with no call in between.
    with torch.no_grad():
        layer.gate.weight.mul_(2)
    seen = c.get_param("gate.weight", layer.gate.weight.shape)
    assert torch.equal(seen, layer.gate.weight.detach())


def test_the_next_forward_computes_with_the_changed_values(layer, context):
    x = batch(3)
    layer(x)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(0.5)
    fresh = switchyard.MoELayer(layer.config, context)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x), fresh(x))


def test_gradients_accumulate_over_backward_calls_as_autograd_does(layer):
    x1, x2 = batch(4), batch(5, tokens=3)
    g1, g2 = gradients(layer, x1), gradients(layer, x2)

    layer.zero_grad(set_to_none=True)
    layer(x1).sum().backward()
    layer(x2).sum().backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, g1[name] + g2[name], rtol=1e-5, atol=1e-7, msg=name)

    # set_to_none: a fresh gradient, in a new tensor bound in place of the old one.
    old = layer.gate.weight.grad
    layer.zero_grad(set_to_none=True)
    layer(x1).sum().backward()
    assert layer.gate.weight.grad is not old
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, g1[name], rtol=1e-5, atol=1e-7, msg=name)
        assert layer._layer.grad_data(name)[0] == p.grad.data_ptr(), name

    # Zeroed in place: the same tensors, restarted from zero.
    kept = {name: p.grad for name, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=False)
    layer(x2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is kept[name], name
        torch.testing.assert_close(p.grad, g2[name], rtol=1e-5, atol=1e-7, msg=name)

    # A gradient the user assigned is accumulated onto, as autograd does.
    layer.gate.weight.grad = torch.ones_like(layer.gate.weight)
    layer(x1).sum().backward()
    torch.testing.assert_close(layer.gate.weight.grad, 1 + g1["gate.weight"], rtol=1e-5,
                               atol=1e-7)


def test_a_new_grad_is_written_not_added_onto(layer, monkeypatch):
    """A .grad that is None is made with torch.empty_like, never cleared (no 2.2 GB memset at
    DeepSeekMoE-16B), and bound fresh: the C backward writes it. Memory full of NaN, which an
    allocator may hand out, must leave no trace."""
    x1, x2 = batch(7), batch(8, tokens=3)
    g1, g2 = gradients(layer, x1), gradients(layer, x2)

    def nan_empty_like(t, *args, **kwargs):
        return torch.full_like(t, float("nan"), *args, **kwargs)

    monkeypatch.setattr(torch, "empty_like", nan_empty_like)
    layer.zero_grad(set_to_none=True)
    layer(x1).sum().backward()
    for name, p in layer.named_parameters():
        assert not p.grad.isnan().any(), name
        torch.testing.assert_close(p.grad, g1[name], rtol=1e-5, atol=1e-7, msg=name)
    layer(x2).sum().backward()  # then added to, as autograd does
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, g1[name] + g2[name], rtol=1e-5, atol=1e-7, msg=name)


def test_replaced_tensors_are_bound_again(layer, context):
    x = batch(6)
    layer(x).sum().backward()
    new = {name: 0.5 * p.detach().clone() for name, p in layer.named_parameters()}
    for name, p in layer.named_parameters():
        p.data = new[name]
    # Non-contiguous storage with the right shape: made contiguous, then bound.
    h, i = CONFIG["hidden"], CONFIG["intermediate"]
    transposed = torch.empty(h, i).t().copy_(new["shared_experts.up_proj.weight"])
    layer.shared_experts.up_proj.weight.data = transposed
    assert not layer.shared_experts.up_proj.weight.is_contiguous()
    y = layer(x)
    for name, p in layer.named_parameters():
        assert p.is_contiguous() and layer._layer.param_data(name)[0] == p.data_ptr(), name

    fresh = switchyard.MoELayer(layer.config, context)
    fresh.load_state_dict(new)
    assert torch.equal(y, fresh(x))


def test_a_frozen_parameter_keeps_its_gradient_untouched(layer):
    layer(batch(7)).sum().backward()
    before = layer.gate.weight.grad.clone()
    layer.gate.weight.requires_grad_(False)
    layer(batch(8)).sum().backward()
    assert torch.equal(layer.gate.weight.grad, before)
    layer.gate.weight.requires_grad_(True)
    layer.gate.weight.grad = None
    layer(batch(8)).sum().backward()
    assert layer._layer.grad_data("gate.weight")[0] == layer.gate.weight.grad.data_ptr()


def test_parameters_must_stay_float32(layer):
    layer.gate.weight.data = layer.gate.weight.data.double()
    with pytest.raises(TypeError, match="gate.weight must be a contiguous float32 CPU tensor"):
        layer(batch(9))


def test_bf16_compute_follows_an_optimizer_step(context):
    """With bf16 compute the C layer converts each parameter once per update: after an optimizer
    step (an in-place write torch counts) the next forward must use the new values, as an fp32
    layer with the same weights does (within bf16's 1e-2)."""
    bf16 = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG, backend="onednn", compute="bf16"),
                               context, seed=5)
    fp32 = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context, seed=5)
    x = batch(11)
    bf16(x).sum().backward()
    torch.optim.SGD(bf16.parameters(), lr=0.5).step()
    fp32.load_state_dict(bf16.state_dict())
    want = fp32(x)
    got = bf16(x)
    error = ((got - want).norm() / want.norm()).item()
    assert 0 < error <= 1e-2, f"bf16 output off the fp32 one by {error:.2e} after the step"


def test_bf16_weights_are_converted_once_per_update(context):
    """The bf16 copies are made when torch's version counters say the parameters changed, not at
    every forward: a write through `.data` (which bumps no counter) is not seen until
    parameters_changed() says so; then the output is that of a fresh layer with the new weights,
    to the bit. Gradient-accumulation forwards between updates thus convert nothing."""
    config = switchyard.MoEConfig(**CONFIG, backend="onednn", compute="bf16")
    layer = switchyard.MoELayer(config, context, seed=5)
    x = batch(12)
    before = layer(x)
    layer(x).sum().backward()  # a backward between forwards changes no parameter either
    experts = [p for name, p in layer.named_parameters() if name != "gate.weight"]
    for p in experts:
        p.data.mul_(0.5)  # unseen by torch's version counters
    assert torch.equal(layer(x), before)

    layer.parameters_changed()
    fresh = switchyard.MoELayer(config, context)
    fresh.load_state_dict(layer.state_dict())
    after = layer(x)
    assert not torch.equal(after, before)
    assert torch.equal(after, fresh(x))


def test_backend_and_compute_refused_when_unknown(context):
    for field, value in (("backend", "cublas"), ("compute", "fp8")):
        with pytest.raises(ValueError, match=field):
            switchyard.MoELayer(switchyard.MoEConfig(**CONFIG, **{field: value}), context)
    with pytest.raises(Exception, match="bf16"):
        switchyard.MoELayer(switchyard.MoEConfig(**CONFIG, backend="openblas", compute="bf16"),
                            context)
