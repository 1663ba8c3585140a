"""Owners of the C handles: a context (over an MPI communicator), a layer, a forward's saved state.

Each owner frees its handle in close() or, failing that, when it is garbage-collected. A context
closes its layers before itself (the C API requires it). After MPI has been finalised nothing is
freed: the C destructors free MPI communicators, which MPI forbids after MPI_Finalize, and the
process is ending anyway. mpi4py finalises MPI through Py_AtExit, after Python's own teardown, so
objects that die with the interpreter are freed normally.
"""

import atexit
import ctypes
import os
import sys
import weakref
from collections import namedtuple

import torch

from . import _capi
from ._capi import SwitchyardError, check, lib

Topology = namedtuple("Topology", "node num_nodes local_rank local_size")
AuxLosses = namedtuple("AuxLosses", "expert_balance device_balance z_loss")
AuxLosses.__doc__ = "The unweighted aux losses of the global batch of one forward."


def _mpi_finalized():
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and mpi.Is_finalized()


# Statuses after which a peer may be gone (sy_status_t).
_PEER_GONE = {code for code, name in _capi.STATUS_NAMES.items()
              if name in ("SY_TIMEOUT", "SY_PEER_FAILURE")}
_peer_failure_under_mpi = []  # the message of the first such failure of an MPI context


def _check_noting_peer_failure(status, last_error, mpi):
    """check(), remembering a failure that may have lost a peer of an MPI context."""
    try:
        check(status, last_error)
    except SwitchyardError as e:
        if mpi and e.status in _PEER_GONE and not _peer_failure_under_mpi:
            _peer_failure_under_mpi.append(e.message)
        raise


@atexit.register
def _abort_if_a_peer_failed():
    """After a peer failed under MPI, MPI_Finalize (mpi4py calls it once Python's own exit
    handlers have run) would wait for that peer forever: end the job with MPI_Abort instead."""
    if not _peer_failure_under_mpi or _mpi_finalized():
        return
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return
    print(f"switchyard: ending the job with MPI_Abort, as MPI cannot finalise after a peer "
          f"failed ({_peer_failure_under_mpi[0][:300]})", file=sys.stderr, flush=True)
    mpi.COMM_WORLD.Abort(1)


def _fortran_handle(comm):
    """An int Fortran handle from an mpi4py communicator, an int, or None (MPI.COMM_WORLD)."""
    if comm is None:
        from mpi4py import MPI  # initialises MPI

        comm = MPI.COMM_WORLD
    return comm if isinstance(comm, int) else comm.py2f()


def _float_arg(tensor, what):
    """The pointer of a float32 CPU tensor that must already be contiguous (an output)."""
    if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise TypeError(f"switchyard: {what} must be a contiguous float32 CPU tensor, got "
                        f"{tensor.dtype} on {tensor.device}"
                        f"{'' if tensor.is_contiguous() else ' (not contiguous)'}")
    return _capi.float_ptr(tensor)


class Context:
    """The runtime over an MPI communicator (or, with from_env, over a TCP rendezvous store
    without MPI): topology, transports, the bound on every wait.

    comm: an mpi4py communicator, its Fortran handle (int), or None for MPI.COMM_WORLD (which
    imports mpi4py and so initialises MPI). Collective over the communicator.
    timeout_ms: bound on every wait for a peer (0: the library's default, 120 s); a peer that does
    not answer in time makes the call raise SwitchyardError(SY_TIMEOUT) naming it.
    """

    _handle = None  # until created, so that __del__ after a failed creation has nothing to free

    def __init__(self, comm=None, timeout_ms=0, alltoall=None):
        self._layers = weakref.WeakSet()
        params = _capi.SyContextParams(timeout_ms=timeout_ms,
                                       alltoall=alltoall.encode() if alltoall else None)
        handle = ctypes.c_void_p()
        self._mpi = True
        check(lib.sy_context_create_mpi(_fortran_handle(comm), ctypes.byref(params),
                                        ctypes.byref(handle)),
              lambda: lib.sy_context_last_error(None))
        self._handle = handle

    @classmethod
    def from_env(cls, timeout_ms=0, alltoall=None, master_addr=None, master_port=-1, rank=-1,
                 world_size=-1, local_rank=-1, secret=None):
        """A context without MPI, for processes launched torchrun-style (mpi4py is not imported).

        Rank 0 hosts a TCP rendezvous store; every rank meets the others there and the data then
        moves over UCX. Arguments left unset come from the environment: MASTER_ADDR,
        SWITCHYARD_MASTER_PORT or else MASTER_PORT (torchrun's own store holds MASTER_PORT, so
        under torchrun set SWITCHYARD_MASTER_PORT), RANK, WORLD_SIZE, LOCAL_RANK, and
        SWITCHYARD_JOB_SECRET (required: the same secret on every rank; it never crosses the
        wire). Collective over the WORLD_SIZE ranks.
        """
        self = cls.__new__(cls)
        self._layers = weakref.WeakSet()
        self._mpi = False
        encode = lambda text: text.encode() if text else None  # noqa: E731
        params = _capi.SyStoreParams(timeout_ms=timeout_ms, alltoall=encode(alltoall),
                                     master_addr=encode(master_addr), master_port=master_port,
                                     rank=rank, world_size=world_size, local_rank=local_rank,
                                     secret=encode(secret))
        handle = ctypes.c_void_p()
        check(lib.sy_context_create_store(ctypes.byref(params), ctypes.byref(handle)),
              lambda: lib.sy_context_last_error(None))
        self._handle = handle
        return self

    @property
    def handle(self):
        """The sy_context_t; raises ValueError once closed."""
        if self._handle is None:
            raise ValueError("switchyard: the context is closed")
        return self._handle

    def _check(self, status):
        _check_noting_peer_failure(status, lambda: lib.sy_context_last_error(self._handle),
                                   self._mpi)

    def _int(self, fn):
        out = ctypes.c_int()
        self._check(fn(self.handle, ctypes.byref(out)))
        return out.value

    @property
    def rank(self):
        return self._int(lib.sy_context_rank)

    @property
    def size(self):
        return self._int(lib.sy_context_size)

    @property
    def topology(self):
        """Node id, number of nodes, rank inside the node, ranks on the node."""
        out = [ctypes.c_int() for _ in range(4)]
        self._check(lib.sy_context_topology(self.handle, *map(ctypes.byref, out)))
        return Topology(*(o.value for o in out))

    def abort(self):
        """Marks the context and its layers unusable (later calls raise SY_ABORTED); local, so a
        rank that gave up on a failed peer does not enter another collective call."""
        self._check(lib.sy_context_abort(self.handle))

    def close(self):
        """Frees the layers made on this context, then the context. Idempotent."""
        for layer in list(self._layers):
            layer.close()
        if self._handle is not None and not _mpi_finalized():
            lib.sy_context_destroy(self._handle)
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Saved:
    """The state one forward keeps for its backward (sy_saved_t); freed by close() or when
    garbage-collected, so a forward whose backward never runs does not leak it."""

    def __init__(self, handle, layer):
        self._handle = handle
        self._layer = layer  # keeps the layer (and its context) alive while this state exists

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("switchyard: this forward's saved state was already consumed by a "
                             "backward (backward twice through a MoE layer is not supported)")
        return self._handle

    def close(self):
        if self._handle is not None and not _mpi_finalized():
            lib.sy_saved_destroy(self._handle)
        self._handle = None

    def __del__(self):
        self.close()


class Layer:
    """A sy_layer_t: an fp32 layer whose routed experts are split contiguously over the ranks.

    Works on torch tensors through their data pointers; `MoELayer` is the autograd-aware module
    on top. Calls marked collective must be made by every rank, in the same order.
    """

    _handle = None

    def __init__(self, context, config):
        c_config = config.to_c()
        handle = ctypes.c_void_p()
        context._check(lib.sy_layer_create(context.handle, ctypes.byref(c_config),
                                           ctypes.byref(handle)))
        self._handle = handle
        self.context = context
        # ("param" | "grad", name) -> a tensor sharing the bound storage, which keeps that memory
        # alive while the C layer points at it, whatever torch does to the original tensor.
        self._bound = {}
        context._layers.add(self)

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("switchyard: the layer is closed")
        return self._handle

    def _check(self, status):
        _check_noting_peer_failure(status, lambda: lib.sy_layer_last_error(self._handle),
                                   self.context._mpi)

    def local_experts(self):
        """The routed expert ids this rank holds, ascending."""
        count = ctypes.c_int()
        self._check(lib.sy_layer_local_experts(self.handle, None, 0, ctypes.byref(count)))
        ids = (ctypes.c_int * count.value)()
        self._check(lib.sy_layer_local_experts(self.handle, ids, count.value, ctypes.byref(count)))
        return list(ids)

    def set_param(self, name, tensor):
        """Copies a float32 tensor into the parameter `name` (Hugging Face naming). Local."""
        data = tensor.detach().contiguous()
        self._check(lib.sy_layer_set_param(self.handle, name.encode(),
                                           _float_arg(data, name), data.numel()))

    def _read(self, fn, name, shape):
        out = torch.empty(shape, dtype=torch.float32)
        self._check(fn(self.handle, name.encode(), _capi.float_ptr(out), out.numel()))
        return out

    def get_param(self, name, shape):
        return self._read(lib.sy_layer_get_param, name, shape)

    def get_grad(self, name, shape):
        """The gradient accumulated since zero_grads; replicated parameters' (gate, shared
        experts) are already summed over all ranks."""
        return self._read(lib.sy_layer_get_grad, name, shape)

    def zero_grads(self):
        self._check(lib.sy_layer_zero_grads(self.handle))

    def bind_param(self, name, tensor):
        """Makes the layer read parameter `name` from tensor's memory, in place, until bound
        elsewhere or closed; nothing is copied. Local."""
        self._bind(lib.sy_layer_bind_param, "param", name, tensor)

    def bind_grad(self, name, tensor, fresh=False):
        """Makes the layer accumulate the gradient of `name` into tensor's memory, in place (each
        backward adds to what it holds), until unbound, bound elsewhere or closed. fresh: the
        tensor holds no gradient yet (torch.empty): the next backward writes it instead of adding,
        so it needs no zeroing (sy_layer_bind_fresh_grad). Local."""
        fn = lib.sy_layer_bind_fresh_grad if fresh else lib.sy_layer_bind_grad
        self._bind(fn, "grad", name, tensor)

    def unbind_grad(self, name):
        """The gradient of `name` returns to the layer's own storage (a copy of its values)."""
        alias = self._bound.pop(("grad", name))
        self._check(lib.sy_layer_bind_grad(self.handle, name.encode(), None, alias.numel()))

    def report_param_changes(self, reported=True):
        """Whether the caller reports writes to bound parameters (params_changed) instead of the
        layer treating them as changed at every forward (bf16 compute then converts the weights
        once per update, not per forward). Local."""
        self._check(lib.sy_layer_report_param_changes(self.handle, int(reported)))

    def params_changed(self):
        """Reports that bound parameter memory was written since the last forward. Local."""
        self._check(lib.sy_layer_params_changed(self.handle))

    def bound(self, kind, name):
        """The tensor bound as parameter or gradient (kind "param" or "grad") `name`, or None."""
        return self._bound.get((kind, name))

    def _bind(self, fn, kind, name, tensor):
        alias = tensor.detach()
        self._check(fn(self.handle, name.encode(), _float_arg(alias, name), alias.numel()))
        self._bound[(kind, name)] = alias

    def param_data(self, name):
        """(address, element count) of the memory the layer reads parameter `name` from."""
        return self._data(lib.sy_layer_param_data, name)

    def grad_data(self, name):
        """(address, element count) of the memory the layer accumulates `name`'s gradient in."""
        return self._data(lib.sy_layer_grad_data, name)

    def _data(self, fn, name):
        data = ctypes.POINTER(ctypes.c_float)()
        count = ctypes.c_size_t()
        self._check(fn(self.handle, name.encode(), ctypes.byref(data), ctypes.byref(count)))
        return ctypes.cast(data, ctypes.c_void_p).value or 0, count.value

    def forward(self, x, y):
        """x [T, H] -> y [T, H] (T may be 0); returns (Saved, AuxLosses). Collective."""
        saved = ctypes.c_void_p()
        aux = _capi.SyAuxLosses()
        self._check(lib.sy_layer_forward(self.handle, _float_arg(x, "x"), x.shape[0], x.shape[1],
                                         _float_arg(y, "y"), ctypes.byref(saved),
                                         ctypes.byref(aux)))
        return Saved(saved, self), AuxLosses(aux.expert_balance, aux.device_balance, aux.z_loss)

    def backward(self, saved, grad_y, grad_x):
        """grad_y -> grad_x; adds the parameter gradients to the layer's. Collective."""
        self._check(lib.sy_layer_backward(self.handle, saved.handle, _float_arg(grad_y, "grad_y"),
                                          _float_arg(grad_x, "grad_x")))

    def expert_load(self, num_experts):
        """Tokens routed to each expert by the last forward, summed over ranks (float64)."""
        load = torch.empty(num_experts, dtype=torch.float64)
        self._check(lib.sy_layer_expert_load(
            self.handle, ctypes.cast(load.data_ptr(), ctypes.POINTER(ctypes.c_double)),
            num_experts))
        return load

    def update_selection_bias(self):
        self._check(lib.sy_layer_update_selection_bias(self.handle))

    def save(self, directory, step):
        """Writes the parameters and selection bias by global expert id as directory/step-<step>
        (docs/checkpoints.md), atomically. Collective."""
        self._check(lib.sy_layer_save(self.handle, os.fsencode(directory), step))

    def load(self, path, keep_placement=True):
        """Reads a checkpoint (directory/step-<N>, or a directory: its latest) into the layer,
        each rank the experts it holds (bound memory in place); returns its step. Collective; a
        failure on any rank raises on every rank and changes nothing."""
        step = ctypes.c_int64()
        self._check(lib.sy_layer_load(self.handle, os.fsencode(path), 0 if not keep_placement
                                      else 1, ctypes.byref(step)))
        return step.value

    def close(self):
        if self._handle is not None and not _mpi_finalized():
            lib.sy_layer_destroy(self._handle)
        self._handle = None
        self._bound = {}  # the layer no longer points at them

    def __del__(self):
        self.close()

