"""State dicts and checkpoints of MoELayer across expert-parallel sizes: the state dicts of every
rank, merged, load into a layer on one rank (and one rank's into the layer on every rank), keyed
by global expert id; save_checkpoint / load_checkpoint (sy_layer_save / sy_layer_load) do the
same through sharded files, and a damaged checkpoint fails every rank and changes nothing."""

import os
import shutil
import tempfile
import zlib

import pytest
import torch

import switchyard

CONFIG = dict(hidden=8, num_experts=4, top_k=2, intermediate=4, num_shared=1,
              selection_bias=True)


def trained(context, seed=1):
    """A layer whose values depend only on (seed, parameter name), as after some training."""
    layer = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context, seed=seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()) + 1000 * seed)
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        layer.gate.e_score_correction_bias.copy_(torch.arange(4.0) * 0.01 + seed)
    return layer


def expect_same(layer, reference):
    ref = dict(reference.named_parameters())
    for name, p in layer.named_parameters():
        assert torch.equal(p, ref[name]), name
    assert torch.equal(layer.gate.e_score_correction_bias, reference.gate.e_score_correction_bias)


@pytest.fixture
def shared_dir(comm):
    path = comm.bcast(tempfile.mkdtemp(prefix="sy-py-ckpt-") if comm.rank == 0 else None)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path)


def test_state_dicts_move_between_expert_parallel_sizes(comm, context, shared_dir):
    from mpi4py import MPI

    layer = trained(context)
    torch.save(layer.state_dict(), f"{shared_dir}/rank{comm.rank}.pt")
    comm.Barrier()
    if comm.rank == 0:
        with switchyard.Context(MPI.COMM_SELF) as solo:
            single = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), solo, seed=2)
            merged = switchyard.merge_state_dicts(
                *(torch.load(f"{shared_dir}/rank{r}.pt") for r in range(comm.size)))
            assert {k.split(".")[1] for k in merged if k.startswith("experts.")} == \
                {"0", "1", "2", "3"}
            single.load_state_dict(merged)  # strict: every key of the one-rank layer is there
            expect_same(single, trained(solo))
            torch.save(single.state_dict(), f"{shared_dir}/single.pt")
            with pytest.raises(ValueError, match="'gate.weight' differs"):
                switchyard.merge_state_dicts(merged, trained(solo, seed=3).state_dict())
            single = None
    comm.Barrier()
    # One rank's state dict loads into the layer on every rank: experts held elsewhere are passed
    # over, not unexpected.
    other = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), context, seed=3)
    other.load_state_dict(torch.load(f"{shared_dir}/single.pt"))
    expect_same(other, layer)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(comm.rank))
    assert torch.equal(other(x), layer(x))
    # An expert this rank holds must be there.
    partial = torch.load(f"{shared_dir}/single.pt")
    del partial[f"experts.{other.expert_ids[0]}.up_proj.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict(partial)


def test_checkpoints_through_the_library(comm, context, shared_dir):
    from mpi4py import MPI

    layer = trained(context)
    layer.save_checkpoint(f"{shared_dir}/ck", 5)
    comm.Barrier()
    if comm.rank == 0:
        with switchyard.Context(MPI.COMM_SELF) as solo:
            single = switchyard.MoELayer(switchyard.MoEConfig(**CONFIG), solo, seed=2)
            assert single.load_checkpoint(f"{shared_dir}/ck") == 5
            expect_same(single, trained(solo))
            single = None
    comm.Barrier()
    other, before = trained(context, seed=3), trained(context, seed=3)
    # Rank 0's shard (the replicated tensors, which every rank reads) cut short.
    shard = f"{shared_dir}/ck/step-5/shard-0.bin"
    if comm.rank == 0:
        os.truncate(shard, 100)
    comm.Barrier()
    with pytest.raises(switchyard.SwitchyardError, match="rank 0: checkpoint file .*truncated"):
        other.load_checkpoint(f"{shared_dir}/ck")
    expect_same(other, before)  # nothing changed
    layer.save_checkpoint(f"{shared_dir}/ck", 6)
    assert other.load_checkpoint(f"{shared_dir}/ck") == 6
    expect_same(other, layer)
