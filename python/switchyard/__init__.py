"""switchyard for PyTorch: the expert-parallel DeepSeekMoE layer as a torch.nn.Module.

A thin ctypes binding of libswitchyard.so (runtime/switchyard.h); no compiled extension. Launch
the trainer with mpirun and give the layer a Context over an MPI communicator (mpi4py's), e.g.:

    from mpi4py import MPI
    import switchyard
    layer = switchyard.MoELayer(switchyard.MoEConfig(hidden=64, num_experts=8, top_k=2,
                                                     intermediate=32, num_shared=1),
                                switchyard.Context(MPI.COMM_WORLD))
    y = layer(x)            # x: this rank's tokens, float32 [..., 64]
"""

from ._capi import SwitchyardError, lib
from .config import MoEConfig
from .handles import AuxLosses, Context, Topology
from .module import MoELayer, merge_state_dicts


def version():
    """The loaded library's version code, major * 10000 + minor * 100 + patch."""
    return lib.sy_version()


__all__ = ["AuxLosses", "Context", "MoEConfig", "MoELayer", "SwitchyardError", "Topology",
           "merge_state_dicts", "version"]
