/* switchyard C API: an expert-parallel DeepSeekMoE layer for trainers written in any language.
 *
 * Conventions (after NCCL and UCC):
 * - Opaque handles; every call returns sy_status_t. On failure the handle the call was given keeps
 *   a message saying what was wrong (sy_context_last_error / sy_layer_last_error). A failed call
 *   changes no parameter.
 * - Collective calls fail together (since 0.4): sy_layer_create, forward, backward,
 *   apply_placement, save and load first compare, in the collective they make anyway, whether
 *   every rank's own checks passed and (create, apply_placement) whether every rank passed the
 *   same configuration and placement. A failure on any rank returns the same status on every
 *   rank, with a message naming each failing rank and why, or each differing field with every
 *   rank's value; no rank has sent anything, and the layer stays usable. A call that fails
 *   half-way instead (a peer timed out or died: SY_TIMEOUT / SY_PEER_FAILURE, naming it) leaves
 *   the peers anywhere in it: the layer then answers every later call with SY_ABORTED. Under MPI,
 *   end the job with MPI_Abort (MPI cannot finalise with a peer gone); without MPI, exit (the
 *   context's teardown no longer waits for the failed peer).
 * - Every wait on a peer is bounded by sy_context_params_t.timeout_ms, else SWITCHYARD_TIMEOUT
 *   (seconds), else 120 s.
 * - Parameter structs carry their own size as the first field; initialise them with the
 *   SY_*_INIT macros so that fields added later keep old callers working: a struct from an older
 *   header (a smaller size of a released version) is accepted, the fields it lacks taking their
 *   SY_*_INIT defaults; any other size is refused. Every struct change bumps the version.
 * - Version 0.3 added caller-owned parameter and gradient memory (sy_layer_bind_param,
 *   sy_layer_bind_grad, sy_layer_param_data, sy_layer_grad_data)
 *   and the kernel backend fields of sy_layer_config_t; a caller that needs them checks
 *   sy_version() >= 300. Version 0.4 added checkpoints (sy_layer_save, sy_layer_load), collective
 *   errors (above) and the refusal of a second sy_layer_backward of one forward. Version 0.5
 *   added reported changes of bound parameters (sy_layer_report_param_changes,
 *   sy_layer_params_changed), 0.6 fresh gradient memory (sy_layer_bind_fresh_grad).
 * - No C++ exception crosses this boundary.
 * - Thread safety: calls on one context and its layers must not run concurrently (they
 *   communicate, and every rank must issue the same collective calls in the same order).
 *   sy_status_string and sy_version are safe from any thread.
 */
#ifndef SWITCHYARD_H_
#define SWITCHYARD_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Only the sy_* functions are exported from libswitchyard.so. */
#if defined(SWITCHYARD_BUILDING_LIBRARY)
#define SY_API __attribute__((visibility("default")))
#else
#define SY_API
#endif

#define SY_VERSION_MAJOR 0
#define SY_VERSION_MINOR 6
#define SY_VERSION_PATCH 0
#define SY_VERSION_CODE (SY_VERSION_MAJOR * 10000 + SY_VERSION_MINOR * 100 + SY_VERSION_PATCH)

typedef enum {
  SY_OK = 0,
  SY_INVALID_ARGUMENT = 1,
  SY_UNSUPPORTED = 2,
  SY_OUT_OF_MEMORY = 3,
  SY_TIMEOUT = 4,
  SY_PEER_FAILURE = 5,
  SY_INTERNAL = 6,
  SY_ABORTED = 7 /* the context was aborted; only destroy calls are accepted */
} sy_status_t;

/* A static description of a status, e.g. "invalid argument". Never NULL. */
SY_API const char* sy_status_string(sy_status_t status);
/* The library's version as SY_VERSION_CODE computes it, to compare with the header's. */
SY_API int sy_version(void);

typedef struct sy_context* sy_context_t;
typedef struct sy_layer* sy_layer_t;
typedef struct sy_saved* sy_saved_t;

/* ---- context ---------------------------------------------------------------------------- */

typedef struct {
  size_t size;            /* sizeof(sy_context_params_t), set by SY_CONTEXT_PARAMS_INIT */
  int64_t timeout_ms;     /* bound on every wait for a peer; 0 = default (120000) */
  const char* alltoall;   /* all-to-all algorithm name; NULL = "flat" */
} sy_context_params_t;

#define SY_CONTEXT_PARAMS_INIT {sizeof(sy_context_params_t), 0, NULL}

/* Creates a context over an existing MPI communicator given as its Fortran handle
 * (MPI_Comm_c2f(comm) in C; mpi4py's comm.py2f()), so callers need no MPI headers. MPI must be
 * initialised. Collective over the communicator. */
SY_API sy_status_t sy_context_create_mpi(int64_t mpi_fortran_comm, const sy_context_params_t* params,
                                  sy_context_t* context);
/* Without MPI (torchrun-style launch): rank 0 hosts a TCP rendezvous store at master_addr:
 * master_port, every rank meets the others there (peers prove they hold the job secret by
 * HMAC-SHA256 challenge-response; the secret never crosses the wire), ranks with one hostname
 * form a node, and all traffic then moves over UCX. Unset fields come from the environment:
 * MASTER_ADDR, SWITCHYARD_MASTER_PORT or else MASTER_PORT (torchrun's own store already holds
 * MASTER_PORT, so under torchrun set SWITCHYARD_MASTER_PORT), RANK, WORLD_SIZE, LOCAL_RANK and
 * SWITCHYARD_JOB_SECRET (required, the same on every rank). Collective over the WORLD_SIZE ranks. */
typedef struct {
  size_t size;             /* sizeof(sy_store_params_t), set by SY_STORE_PARAMS_INIT */
  int64_t timeout_ms;      /* bound on every wait for a peer, rendezvous included; 0 = 120000 */
  const char* alltoall;    /* all-to-all algorithm name; NULL = "flat" */
  const char* master_addr; /* rank 0's address; NULL = $MASTER_ADDR */
  int master_port;         /* -1 = $SWITCHYARD_MASTER_PORT, else $MASTER_PORT */
  int rank;                /* -1 = $RANK */
  int world_size;          /* -1 = $WORLD_SIZE */
  int local_rank;          /* -1 = $LOCAL_RANK if set (checked against the hostnames) */
  const char* secret;      /* NULL = $SWITCHYARD_JOB_SECRET */
} sy_store_params_t;

#define SY_STORE_PARAMS_INIT {sizeof(sy_store_params_t), 0, NULL, NULL, -1, -1, -1, -1, NULL}

SY_API sy_status_t sy_context_create_store(const sy_store_params_t* params, sy_context_t* context);
SY_API sy_status_t sy_context_rank(sy_context_t context, int* rank);
SY_API sy_status_t sy_context_size(sy_context_t context, int* size);
/* Node id, number of nodes, rank inside the node and ranks on the node. */
SY_API sy_status_t sy_context_topology(sy_context_t context, int* node, int* num_nodes, int* local_rank,
                                int* local_size);
/* Marks the context (and its layers) unusable: later calls return SY_ABORTED. Local, immediate,
 * and (since 0.4) safe from any thread: a call of this context waiting on a peer gives up at once
 * with SY_ABORTED (e.g. a watchdog thread ending a stuck step). */
SY_API sy_status_t sy_context_abort(sy_context_t context);
/* NULL is accepted. Destroy the layers first. */
SY_API sy_status_t sy_context_destroy(sy_context_t context);
/* The message of the last failed call on this context; "" if none. NULL context: a message about
 * failed creation calls on this thread. */
SY_API const char* sy_context_last_error(sy_context_t context);

/* ---- layer ------------------------------------------------------------------------------ */

typedef enum { SY_SCORE_SOFTMAX = 0, SY_SCORE_SIGMOID = 1 } sy_score_func_t;
typedef enum { SY_GROUP_SCORE_TOP2_SUM = 0, SY_GROUP_SCORE_MAX = 1 } sy_group_score_t;
/* Communication/compute overlap (README "Overlapping communication with compute"). ON needs MPI
 * initialised with MPI_Init_thread(..., MPI_THREAD_SERIALIZED, ...) or higher (SY_UNSUPPORTED
 * otherwise); AUTO measures both on the first steps and falls back to OFF without that level. */
typedef enum { SY_OVERLAP_OFF = 0, SY_OVERLAP_ON = 1, SY_OVERLAP_AUTO = 2 } sy_overlap_mode_t;
/* Precision of the token rows on the wire (README "Overlapping communication with compute"):
 * NATIVE sends fp32 as is; BF16 rounds every dispatched and combined row, forward and backward, to
 * bfloat16 (half the bytes; combine adds in fp32). */
typedef enum { SY_WIRE_NATIVE = 0, SY_WIRE_BF16 = 1 } sy_wire_precision_t;
/* Kernel backend (docs/kernels.md), since 0.3. DEFAULT: SWITCHYARD_BACKEND, else OPENBLAS. */
typedef enum { SY_BACKEND_DEFAULT = 0, SY_BACKEND_OPENBLAS = 1, SY_BACKEND_ONEDNN = 2 } sy_backend_t;
/* Precision of the expert GEMMs' inputs, since 0.3: NATIVE is fp32; BF16 rounds them to bfloat16
 * and accumulates in fp32 (ONEDNN only; the router stays fp32; within 1e-2 of fp32, tested).
 * BF16 converts each parameter once and keeps the copy until a call changes parameters; bound
 * parameters (sy_layer_bind_param) can change with no call, so they are converted again at every
 * forward, unless the caller reports their changes (sy_layer_report_param_changes). */
typedef enum { SY_COMPUTE_NATIVE = 0, SY_COMPUTE_BF16 = 1 } sy_compute_precision_t;

typedef struct {
  size_t size; /* sizeof(sy_layer_config_t), set by SY_LAYER_CONFIG_INIT */
  int64_t hidden;
  int num_experts;
  int num_shared;
  int top_k;
  int64_t intermediate;
  sy_score_func_t scoring;
  int norm_topk_prob;
  double routed_scaling_factor;
  int n_group;
  int topk_group;
  sy_group_score_t group_score;
  int selection_bias;
  double bias_update_rate;
  double aux_expert_alpha;
  double aux_device_alpha;
  double z_loss_alpha;
  sy_overlap_mode_t overlap;
  int overlap_chunks; /* token chunks of a pipelined step; 0: chosen from measurements */
  sy_wire_precision_t wire;
  sy_backend_t backend;           /* since 0.3 */
  sy_compute_precision_t compute; /* since 0.3 */
} sy_layer_config_t;

#define SY_LAYER_CONFIG_INIT                                                                    \
  {sizeof(sy_layer_config_t), 0, 0, 0, 1, 0, SY_SCORE_SOFTMAX, 0, 1.0, 1, 1,                   \
   SY_GROUP_SCORE_TOP2_SUM, 0, 0.001, 0.0, 0.0, 0.0, SY_OVERLAP_OFF, 0, SY_WIRE_NATIVE,   \
   SY_BACKEND_DEFAULT, SY_COMPUTE_NATIVE}

typedef struct {
  double expert_balance; /* unweighted, over the global batch */
  double device_balance;
  double z_loss;
} sy_aux_losses_t;

/* fp32 layer whose routed experts are split contiguously over the context's ranks. Parameters
 * start at zero. Collective. */
SY_API sy_status_t sy_layer_create(sy_context_t context, const sy_layer_config_t* config,
                            sy_layer_t* layer);
SY_API sy_status_t sy_layer_destroy(sy_layer_t layer);
SY_API const char* sy_layer_last_error(sy_layer_t layer);

/* The routed experts this rank holds, ascending: *count is set; ids (if not NULL) receives up to
 * capacity of them. */
SY_API sy_status_t sy_layer_local_experts(sy_layer_t layer, int* ids, int capacity, int* count);

/* Parameters by their Hugging Face DeepSeek names:
 *   "gate.weight" [E, H], "gate.e_score_correction_bias" [E] (the selection bias),
 *   "experts.<e>.gate_proj.weight" [I, H], "experts.<e>.up_proj.weight" [I, H],
 *   "experts.<e>.down_proj.weight" [H, I]   (only experts this rank holds),
 *   "shared_experts.gate_proj.weight" [S*I, H], "shared_experts.up_proj.weight" [S*I, H],
 *   "shared_experts.down_proj.weight" [H, S*I].
 * count must equal the tensor's element count. Local (not collective). */
SY_API sy_status_t sy_layer_set_param(sy_layer_t layer, const char* name, const float* data,
                               size_t count);
SY_API sy_status_t sy_layer_get_param(sy_layer_t layer, const char* name, float* data, size_t count);
/* The accumulated gradient of a parameter (the bias has none). */
SY_API sy_status_t sy_layer_get_grad(sy_layer_t layer, const char* name, float* data, size_t count);
SY_API sy_status_t sy_layer_zero_grads(sy_layer_t layer);

/* Caller-owned memory (since 0.3). A trainer that keeps its own parameter and gradient tensors
 * (PyTorch's, say) binds them once instead of copying every step: the layer then reads that
 * parameter from data, and accumulates that gradient into data, in place. Names as above; the
 * selection bias cannot be bound (it has no gradient, and the layer keeps its E floats itself).
 * - count must equal the tensor's element count; data holds count contiguous floats.
 * - Binding copies nothing: from then on data holds the values. A bound gradient goes on
 *   accumulating onto what data holds (every backward adds to it, as autograd adds to .grad).
 * - The caller keeps data allocated and unmoved, and does not write it during a forward or
 *   backward of this layer, until it is unbound, bound elsewhere, or the layer is destroyed.
 * - data NULL unbinds: the layer's own storage returns, holding a copy of the current values.
 * - set_param, get_param, get_grad and zero_grads read and write the bound memory.
 * - sy_layer_apply_placement keeps the bindings of the gate, the shared experts and the routed
 *   experts this rank keeps; experts that arrive are held in the layer's own storage; every
 *   gradient binding is released (the gradients restart at zero in the layer's storage, the
 *   caller's gradient memory is not written). Bind the new tensors again after it.
 * Local (not collective); on failure nothing changes. */
SY_API sy_status_t sy_layer_bind_param(sy_layer_t layer, const char* name, float* data,
                                       size_t count);
SY_API sy_status_t sy_layer_bind_grad(sy_layer_t layer, const char* name, float* data,
                                      size_t count);
/* Fresh gradient memory (since 0.6): binds data as the gradient of name, as sy_layer_bind_grad
 * does, but as holding no gradient yet — memory just allocated and never cleared, as autograd
 * makes a new .grad when it is None (torch's zero_grad(set_to_none=True), the default since torch
 * 2.0). Its values are never read: the next sy_layer_backward writes the gradient there instead
 * of adding to it (the routed experts' weight-gradient GEMMs write it directly: no zeroing pass,
 * no read of the old values), and the backwards after it add, as with sy_layer_bind_grad. Before
 * that backward, sy_layer_get_grad reads zeros, sy_layer_zero_grads writes zeros, and unbinding
 * keeps zeros. If that backward fails, the memory holds unspecified values (the caller drops it,
 * as torch drops a .grad it could not make). data must not be NULL. Local; on failure nothing
 * changes. */
SY_API sy_status_t sy_layer_bind_fresh_grad(sy_layer_t layer, const char* name, float* data,
                                            size_t count);
/* Reported changes of bound parameters (since 0.5). The layer cannot see a write to bound
 * parameter memory, so by default every sy_layer_forward treats the bound parameters as changed
 * and the backend derives again what it keeps from them (bf16 compute's converted weights: a
 * read of every weight and a write of half as many bytes, each forward). After
 * sy_layer_report_param_changes(layer, 1) the caller promises to call sy_layer_params_changed
 * after each write to bound parameter memory (an optimizer step, a load) and before the next
 * forward; the copies are then made once per update, however many forwards run between updates
 * (gradient accumulation). A write left unreported is not seen by the layer's bf16 GEMMs until the
 * next report. Binding, sy_layer_set_param, sy_layer_load and sy_layer_apply_placement count as
 * reports. reported 0 returns to the default. Local (not collective). */
SY_API sy_status_t sy_layer_report_param_changes(sy_layer_t layer, int reported);
SY_API sy_status_t sy_layer_params_changed(sy_layer_t layer);
/* Where the layer reads a parameter (the bias included) or accumulates its gradient now: the bound
 * memory, or else its own storage, valid until the next bind, sy_layer_apply_placement or
 * sy_layer_destroy. *data and *count are set. Local. */
SY_API sy_status_t sy_layer_param_data(sy_layer_t layer, const char* name, float** data,
                                       size_t* count);
SY_API sy_status_t sy_layer_grad_data(sy_layer_t layer, const char* name, float** data,
                                      size_t* count);

/* x [tokens, hidden] -> y [tokens, hidden], caller-owned. tokens may differ per rank and may be 0.
 * *saved receives the state backward needs (free it with sy_saved_destroy); aux may be NULL.
 * Collective. */
SY_API sy_status_t sy_layer_forward(sy_layer_t layer, const float* x, int64_t tokens, int64_t hidden,
                             float* y, sy_saved_t* saved, sy_aux_losses_t* aux);
/* grad_y [tokens, hidden] -> grad_x [tokens, hidden]; adds this batch's parameter gradients
 * (replicated ones summed over ranks) to the layer's. Once per forward: a second backward of the
 * same saved state is SY_INVALID_ARGUMENT (on every rank). Collective. */
SY_API sy_status_t sy_layer_backward(sy_layer_t layer, sy_saved_t saved, const float* grad_y,
                              float* grad_x);
SY_API sy_status_t sy_saved_destroy(sy_saved_t saved);

/* Tokens routed to each expert in the last forward, summed over ranks: load[num_experts]. */
SY_API sy_status_t sy_layer_expert_load(sy_layer_t layer, double* load, int num_experts);
/* Aux-loss-free balancing step from the last forward's loads. */
SY_API sy_status_t sy_layer_update_selection_bias(sy_layer_t layer);

/* Applies an expert placement in the moe-placement/v1 convention (what sy-plan and DeepSeek's EPLB
 * write for one layer): phy2log[j] is the expert in slot j, slot j on rank j / (num_slots / size).
 * Every expert at least once, never twice on one rank. Experts a rank newly holds arrive with their
 * weights from their current holder; tokens of a replicated expert are split over its replicas and
 * the replicas' gradients are summed, so they stay identical. Gradients are reset to zero; the
 * caller's optimizer state for moved experts is the caller's to move. Bound memory: see
 * sy_layer_bind_param (gradient bindings are released). Collective; every rank passes the same
 * placement. On failure nothing changes. */
SY_API sy_status_t sy_layer_apply_placement(sy_layer_t layer, const int* phy2log, int num_slots);

/* Checkpoints (docs/checkpoints.md), since 0.4. sy_layer_save writes the layer's parameters and
 * selection bias, keyed by global expert id (a replicated expert once), and its placement as
 * dir/step-<step>/, atomically (a crash at any moment leaves the earlier checkpoints loadable),
 * then points dir/latest at it; the two newest checkpoints in dir are kept. The optimizer state is
 * the caller's to save. sy_layer_load reads path (a dir/step-<N>, or a dir: its latest) into the
 * layer: with keep_placement 0 and the saved number of ranks it also adopts the saved placement
 * (as sy_layer_apply_placement, with its rules for bound memory); otherwise, or on another number
 * of ranks, each rank reads the experts it holds now. Bound parameters receive the values in
 * place. Gradients are zeroed. *step (if not NULL) receives the checkpoint's step. Collective;
 * a failure on any rank (a missing, truncated, corrupt or foreign file: the message names the
 * rank, the file and why) fails the call on every rank, and a failed load changes nothing. */
SY_API sy_status_t sy_layer_save(sy_layer_t layer, const char* dir, int64_t step);
SY_API sy_status_t sy_layer_load(sy_layer_t layer, const char* path, int keep_placement,
                                 int64_t* step);

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_H_ */
