"""The torch side of MoELayer: gradient accumulation, the lifetime of a forward's saved state,
parameter names and loading, shapes, the selection-bias buffer."""

import gc
import weakref

import pytest
import torch

import deepseek_moe_reference as reference
import switchyard
from switchyard.handles import Saved

CONFIG = dict(hidden=8, num_experts=4, top_k=2, intermediate=4, num_shared=1)


@pytest.fixture
def layer(context):
    return switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context, seed=5)


@pytest.fixture
def open_saved_states(monkeypatch):
    """Counts the forward states created during the test that are still unfreed."""
    created = []
    init = Saved.__init__

    def recording_init(self, *args):
        init(self, *args)
        created.append(weakref.ref(self))

    monkeypatch.setattr(Saved, "__init__", recording_init)
    return lambda: sum(s() is not None and s()._handle is not None for s in created)


def test_gradients_accumulate_like_autograd(layer):
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    layer(x).sum().backward()
    once = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer(x).sum().backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name], rtol=1e-6, atol=0, msg=name)


def test_saved_state_is_freed_with_or_without_backward(layer, open_saved_states):
    x = torch.randn(3, 8, requires_grad=True)
    y = layer(x)
    assert open_saved_states() == 1
    y.sum().backward()
    assert open_saved_states() == 0  # freed by backward
    y = layer(x)
    del y  # the graph dies without a backward
    gc.collect()
    assert open_saved_states() == 0
    with torch.no_grad():
        layer(x)
    gc.collect()
    assert open_saved_states() == 0


def test_second_backward_and_stale_parameters_are_refused(layer):
    x = torch.randn(3, 8, requires_grad=True)
    y = layer(x)
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        y.sum().backward()
    y = layer(x)
    with torch.no_grad():
        layer.gate.weight.add_(1.0)  # e.g. an optimizer step between forward and backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_any_leading_shape_and_frozen_parameters(layer):
    x = torch.randn(2, 3, 8)
    layer.gate.weight.requires_grad_(False)
    y = layer(x.requires_grad_())
    assert y.shape == x.shape
    y.sum().backward()
    assert layer.gate.weight.grad is None and x.grad.shape == x.shape
    flat = layer(x.detach().reshape(6, 8))
    torch.testing.assert_close(flat, y.detach().reshape(6, 8), rtol=0, atol=0)


def test_hugging_face_names_and_loading(layer):
    names = {n for n, _ in layer.named_parameters()}
    shared = {f"shared_experts.{p}.weight" for p in reference.PROJECTIONS}
    experts = {f"experts.{e}.{p}.weight" for e in layer.expert_ids for p in reference.PROJECTIONS}
    assert names == {"gate.weight"} | shared | experts
    assert set(layer.state_dict()) == names

    full = reference.random_weights(layer.config, seed=9)
    layer.load_hf_state_dict(full)
    for name, param in layer.named_parameters():
        assert torch.equal(param, full[name]), name
    # Only what this rank holds is required: other ranks' experts may be absent.
    mine = {n: t for n, t in full.items() if n in names}
    layer.load_hf_state_dict(mine)
    if layer.expert_ids:
        missing = f"experts.{layer.expert_ids[0]}.up_proj.weight"
        with pytest.raises(KeyError, match=missing):
            layer.load_hf_state_dict({n: t for n, t in mine.items() if n != missing})
    with pytest.raises(ValueError, match="gate.weight"):
        layer.load_hf_state_dict({**mine, "gate.weight": torch.zeros(4, 9)})


def test_selection_bias_buffer_follows_the_c_layer(context):
    cfg = switchyard.MoEConfig(**CONFIG, selection_bias=True, bias_update_rate=0.25)
    layer = switchyard.MoELayer(cfg, context)
    assert "gate.e_score_correction_bias" in layer.state_dict()
    layer(torch.randn(6, 8, generator=torch.Generator().manual_seed(2)))
    load = layer.expert_load()
    assert load.sum().item() == cfg.top_k * 6 * context.size
    layer.update_selection_bias()
    mean = load.mean()
    want = 0.25 * torch.sign(mean - load)
    torch.testing.assert_close(layer.gate.e_score_correction_bias, want.float())


def test_initialisation_is_the_same_on_every_rank_and_any_rank_count(layer, comm):
    from mpi4py import MPI

    gates = comm.allgather(layer.gate.weight.detach())
    assert all(torch.equal(g, gates[0]) for g in gates)
    with switchyard.Context(MPI.COMM_SELF) as alone:
        everything = switchyard.MoELayer(layer.config, alone, seed=5)
        assert everything.expert_ids == list(range(layer.config.num_experts))
        full = dict(everything.named_parameters())
        for name, param in layer.named_parameters():
            assert torch.equal(param, full[name]), name
