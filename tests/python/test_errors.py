"""Failures become SwitchyardError with the status name and the library's message, which names
what was wrong; the layer stays usable after a rejected call."""

import os
import subprocess
import sys

import pytest
import torch

import switchyard

CONFIG = dict(hidden=8, num_experts=4, top_k=2, intermediate=4, num_shared=1)


@pytest.mark.parametrize("field, value", [("top_k", 5), ("n_group", 3), ("hidden", 0),
                                          ("intermediate", -1), ("routed_scaling_factor", 0.0)])
def test_bad_config_names_the_field(context, field, value):
    with pytest.raises(switchyard.SwitchyardError) as info:
        switchyard.MoELayer(switchyard.MoEConfig(**{**CONFIG, field: value}), context)
    assert info.value.status_name == "SY_INVALID_ARGUMENT"
    assert field in info.value.message and field in str(info.value)


def test_bad_enum_string_names_the_field(context):
    with pytest.raises(ValueError, match="scoring"):
        switchyard.MoELayer(switchyard.MoEConfig(**CONFIG, scoring="tanh"), context)
    with pytest.raises(ValueError, match="wire"):
        switchyard.MoELayer(switchyard.MoEConfig(**CONFIG, wire="fp8"), context)


def test_rejected_calls_keep_the_layer_usable(context):
    layer = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    y = layer(x)
    with pytest.raises(switchyard.SwitchyardError, match="hidden"):
        layer(torch.randn(3, 9))  # every rank makes the same mistake: no collective is left half
    with pytest.raises(switchyard.SwitchyardError, match="gate.wieght"):
        layer._layer.set_param("gate.wieght", torch.zeros(4, 8))
    with pytest.raises(switchyard.SwitchyardError, match="count"):
        layer._layer.set_param("gate.weight", torch.zeros(4, 7))
    if context.size > 1:
        foreign = (layer.expert_ids[-1] + 1) % 4
        with pytest.raises(switchyard.SwitchyardError, match="held by rank"):
            layer._layer.set_param(f"experts.{foreign}.up_proj.weight", torch.zeros(4, 8))
    with pytest.raises(TypeError, match="float32"):
        layer(x.double())
    torch.testing.assert_close(layer(x), y, rtol=0, atol=0)


def test_abort_makes_later_calls_fail(comm):
    with switchyard.Context(comm, timeout_ms=20000) as context:
        layer = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context)
        context.abort()
        with pytest.raises(switchyard.SwitchyardError) as info:
            layer(torch.randn(2, 8))
        assert info.value.status_name == "SY_ABORTED" and "aborted" in info.value.message
    with pytest.raises(ValueError, match="closed"):
        layer(torch.randn(2, 8))


def test_library_path_from_the_environment(comm):
    if comm.Get_rank() != 0:
        return  # a local check: one rank is enough
    env = {**os.environ, "SWITCHYARD_LIB": "/nonexistent/libswitchyard.so"}
    run = subprocess.run([sys.executable, "-c", "import switchyard"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "cannot load libswitchyard.so" in run.stderr and "/nonexistent" in run.stderr
