"""ctypes binding of libswitchyard.so (runtime/switchyard.h), version 0.6.

Every function of the header is declared here with its argument and result types, so that a
wrong call fails in Python instead of corrupting memory. `check` turns a non-OK status into a
SwitchyardError carrying the status name and the message the library kept on the handle.

The library is found, in order, at $SWITCHYARD_LIB (an explicit override: the only place tried
when set), beside this file (where `pip install .` puts it), at build/release/runtime/
libswitchyard.so in this checkout (the README's build directory), and through the system loader
(an installed copy).
"""

import ctypes
import os
from pathlib import Path

_BESIDE = Path(__file__).resolve().parent / "libswitchyard.so"
_REPO_BUILD = (Path(__file__).resolve().parents[2] / "build" / "release" / "runtime"
               / "libswitchyard.so")

STATUS_NAMES = {
    0: "SY_OK",
    1: "SY_INVALID_ARGUMENT",
    2: "SY_UNSUPPORTED",
    3: "SY_OUT_OF_MEMORY",
    4: "SY_TIMEOUT",
    5: "SY_PEER_FAILURE",
    6: "SY_INTERNAL",
    7: "SY_ABORTED",
}

SCORE_FUNCS = {"softmax": 0, "sigmoid": 1}
GROUP_SCORES = {"top2_sum": 0, "max": 1}
OVERLAP_MODES = {"off": 0, "on": 1, "auto": 2}
WIRE_PRECISIONS = {"native": 0, "bf16": 1}
BACKENDS = {"default": 0, "openblas": 1, "onednn": 2}
COMPUTE_PRECISIONS = {"native": 0, "bf16": 1}


class SwitchyardError(RuntimeError):
    """A switchyard call failed.

    `status` is the sy_status_t value, `status_name` its name (e.g. "SY_INVALID_ARGUMENT") and
    `message` what the library said was wrong (it names the offending field or parameter).
    """

    def __init__(self, status, message):
        self.status = status
        self.status_name = STATUS_NAMES.get(status, f"status {status}")
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


class SyContextParams(ctypes.Structure):
    """sy_context_params_t; `size` is set by the constructor, as SY_CONTEXT_PARAMS_INIT does."""

    _fields_ = [("size", ctypes.c_size_t), ("timeout_ms", ctypes.c_int64),
                ("alltoall", ctypes.c_char_p)]

    def __init__(self, **fields):
        super().__init__(size=ctypes.sizeof(SyContextParams), **fields)


class SyStoreParams(ctypes.Structure):
    """sy_store_params_t (context without MPI); `size` is set as SY_STORE_PARAMS_INIT does, and
    the fields left out keep their "read the environment" value (-1 / NULL)."""

    _fields_ = [("size", ctypes.c_size_t), ("timeout_ms", ctypes.c_int64),
                ("alltoall", ctypes.c_char_p), ("master_addr", ctypes.c_char_p),
                ("master_port", ctypes.c_int), ("rank", ctypes.c_int),
                ("world_size", ctypes.c_int), ("local_rank", ctypes.c_int),
                ("secret", ctypes.c_char_p)]

    def __init__(self, **fields):
        unset = dict(master_port=-1, rank=-1, world_size=-1, local_rank=-1)
        super().__init__(size=ctypes.sizeof(SyStoreParams), **{**unset, **fields})


class SyLayerConfig(ctypes.Structure):
    """sy_layer_config_t; `size` is set by the constructor (MoEConfig supplies the other fields)."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("hidden", ctypes.c_int64),
        ("num_experts", ctypes.c_int),
        ("num_shared", ctypes.c_int),
        ("top_k", ctypes.c_int),
        ("intermediate", ctypes.c_int64),
        ("scoring", ctypes.c_int),
        ("norm_topk_prob", ctypes.c_int),
        ("routed_scaling_factor", ctypes.c_double),
        ("n_group", ctypes.c_int),
        ("topk_group", ctypes.c_int),
        ("group_score", ctypes.c_int),
        ("selection_bias", ctypes.c_int),
        ("bias_update_rate", ctypes.c_double),
        ("aux_expert_alpha", ctypes.c_double),
        ("aux_device_alpha", ctypes.c_double),
        ("z_loss_alpha", ctypes.c_double),
        ("overlap", ctypes.c_int),
        ("overlap_chunks", ctypes.c_int),
        ("wire", ctypes.c_int),
        ("backend", ctypes.c_int),
        ("compute", ctypes.c_int),
    ]

    def __init__(self, **fields):
        super().__init__(size=ctypes.sizeof(SyLayerConfig), **fields)


class SyAuxLosses(ctypes.Structure):
    """sy_aux_losses_t: the unweighted aux losses of the global batch."""

    _fields_ = [("expert_balance", ctypes.c_double), ("device_balance", ctypes.c_double),
                ("z_loss", ctypes.c_double)]


_status = ctypes.c_int
_handle = ctypes.c_void_p
_float_p = ctypes.POINTER(ctypes.c_float)
_int_p = ctypes.POINTER(ctypes.c_int)

# name: (restype, argtypes), in the header's order.
_PROTOTYPES = {
    "sy_status_string": (ctypes.c_char_p, [_status]),
    "sy_version": (ctypes.c_int, []),
    "sy_context_create_mpi": (_status, [ctypes.c_int64, ctypes.POINTER(SyContextParams),
                                        ctypes.POINTER(_handle)]),
    "sy_context_create_store": (_status, [ctypes.POINTER(SyStoreParams),
                                          ctypes.POINTER(_handle)]),
    "sy_context_rank": (_status, [_handle, _int_p]),
    "sy_context_size": (_status, [_handle, _int_p]),
    "sy_context_topology": (_status, [_handle, _int_p, _int_p, _int_p, _int_p]),
    "sy_context_abort": (_status, [_handle]),
    "sy_context_destroy": (_status, [_handle]),
    "sy_context_last_error": (ctypes.c_char_p, [_handle]),
    "sy_layer_create": (_status, [_handle, ctypes.POINTER(SyLayerConfig),
                                  ctypes.POINTER(_handle)]),
    "sy_layer_destroy": (_status, [_handle]),
    "sy_layer_last_error": (ctypes.c_char_p, [_handle]),
    "sy_layer_local_experts": (_status, [_handle, _int_p, ctypes.c_int, _int_p]),
    "sy_layer_set_param": (_status, [_handle, ctypes.c_char_p, _float_p, ctypes.c_size_t]),
    "sy_layer_get_param": (_status, [_handle, ctypes.c_char_p, _float_p, ctypes.c_size_t]),
    "sy_layer_get_grad": (_status, [_handle, ctypes.c_char_p, _float_p, ctypes.c_size_t]),
    "sy_layer_zero_grads": (_status, [_handle]),
    "sy_layer_bind_param": (_status, [_handle, ctypes.c_char_p, _float_p, ctypes.c_size_t]),
    "sy_layer_bind_grad": (_status, [_handle, ctypes.c_char_p, _float_p, ctypes.c_size_t]),
    "sy_layer_bind_fresh_grad": (_status, [_handle, ctypes.c_char_p, _float_p, ctypes.c_size_t]),
    "sy_layer_report_param_changes": (_status, [_handle, ctypes.c_int]),
    "sy_layer_params_changed": (_status, [_handle]),
    "sy_layer_param_data": (_status, [_handle, ctypes.c_char_p, ctypes.POINTER(_float_p),
                                      ctypes.POINTER(ctypes.c_size_t)]),
    "sy_layer_grad_data": (_status, [_handle, ctypes.c_char_p, ctypes.POINTER(_float_p),
                                     ctypes.POINTER(ctypes.c_size_t)]),
    "sy_layer_forward": (
        _status,
        [_handle, _float_p, ctypes.c_int64, ctypes.c_int64, _float_p, ctypes.POINTER(_handle),
         ctypes.POINTER(SyAuxLosses)],
    ),
    "sy_layer_backward": (_status, [_handle, _handle, _float_p, _float_p]),
    "sy_saved_destroy": (_status, [_handle]),
    "sy_layer_expert_load": (_status, [_handle, ctypes.POINTER(ctypes.c_double), ctypes.c_int]),
    "sy_layer_update_selection_bias": (_status, [_handle]),
    "sy_layer_save": (_status, [_handle, ctypes.c_char_p, ctypes.c_int64]),
    "sy_layer_load": (_status, [_handle, ctypes.c_char_p, ctypes.c_int,
                                ctypes.POINTER(ctypes.c_int64)]),
}


def _load():
    """Opens the library from the first place that has one; the error lists every place tried.

    An explicit $SWITCHYARD_LIB is the only place tried when set, so that a wrong path fails
    instead of silently loading another build."""
    if os.environ.get("SWITCHYARD_LIB"):
        candidates = [os.environ["SWITCHYARD_LIB"]]
    else:
        candidates = [str(path) for path in (_BESIDE, _REPO_BUILD) if path.exists()]
        candidates.append("libswitchyard.so")
    errors = []
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            errors.append(str(e))
    raise ImportError(
        "switchyard: cannot load libswitchyard.so (pip install the repository, build the "
        "'switchyard' target, or set SWITCHYARD_LIB to its path): " + "; ".join(errors)
    )


# The oldest library with every function below (0.6 added fresh gradient memory).
REQUIRED_VERSION = 600

lib = _load()
lib.sy_version.restype = ctypes.c_int
if lib.sy_version() < REQUIRED_VERSION:
    raise ImportError(
        f"switchyard: {lib._name} is version code {lib.sy_version()}, but this package needs "
        f"{REQUIRED_VERSION} (0.6) or later; rebuild the 'switchyard' target or point "
        "SWITCHYARD_LIB at a newer build")
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes


def check(status, last_error):
    """Raises SwitchyardError for a non-OK status; `last_error()` returns the handle's message."""
    if status != 0:
        raise SwitchyardError(status, last_error().decode("utf-8", "replace"))


def float_ptr(tensor):
    """The data pointer of a contiguous float32 CPU tensor, typed for the prototypes above."""
    return ctypes.cast(tensor.data_ptr(), _float_p)
