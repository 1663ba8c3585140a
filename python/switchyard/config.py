"""The layer configuration, mirroring sy_layer_config_t (runtime/switchyard.h) field by field."""

from dataclasses import dataclass

from . import _capi


@dataclass
class MoEConfig:
    """One DeepSeekMoE layer. Semantics: DESIGN.md "Routing semantics".

    The C library validates the values when the layer is created and names the first bad field
    in the SwitchyardError it raises; only the string fields are checked here, because they are
    translated into the C enums.
    """

    hidden: int
    num_experts: int
    top_k: int
    intermediate: int
    num_shared: int = 0
    scoring: str = "softmax"  # or "sigmoid"
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    n_group: int = 1
    topk_group: int = 1
    group_score: str = "top2_sum"  # a group's score: its two best experts' sum (V3), or "max" (V2)
    selection_bias: bool = False  # aux-loss-free balancing bias (gate.e_score_correction_bias)
    bias_update_rate: float = 0.001
    aux_expert_alpha: float = 0.0  # coefficients with which backward adds the aux losses' gradients
    aux_device_alpha: float = 0.0
    z_loss_alpha: float = 0.0
    # Hide the all-to-all behind expert compute: "off", "on" (needs MPI initialised with at least
    # MPI_THREAD_SERIALIZED; mpi4py's default is MULTIPLE) or "auto"; chunks 0 = chosen by measurement.
    overlap: str = "off"
    overlap_chunks: int = 0
    # Precision of the token rows on the wire: "native" (fp32) or "bf16" (half the bytes, rounded).
    wire: str = "native"
    # Kernel backend: "default" (SWITCHYARD_BACKEND, else openblas), "openblas" or "onednn"; and the
    # expert GEMMs' input precision: "native" (fp32) or "bf16" (onednn; fp32 accumulation, within
    # 1e-2 of fp32). See docs/kernels.md.
    backend: str = "default"
    compute: str = "native"

    def to_c(self):
        """The sy_layer_config_t for this configuration."""
        fields = dict(vars(self))
        for field, table in (("scoring", _capi.SCORE_FUNCS), ("group_score", _capi.GROUP_SCORES),
                             ("overlap", _capi.OVERLAP_MODES), ("wire", _capi.WIRE_PRECISIONS),
                             ("backend", _capi.BACKENDS), ("compute", _capi.COMPUTE_PRECISIONS)):
            if fields[field] not in table:
                raise ValueError(f"MoEConfig.{field} = {fields[field]!r}; expected one of "
                                 f"{sorted(table)}")
            fields[field] = table[fields[field]]
        fields["norm_topk_prob"] = int(fields["norm_topk_prob"])
        fields["selection_bias"] = int(fields["selection_bias"])
        return _capi.SyLayerConfig(**fields)
