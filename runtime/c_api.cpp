// The C API over MoeLayer<float>: handles, name-based parameter access, and the translation of
// every exception into a status plus a message kept on the handle.
#include <mpi.h>

#include <atomic>
#include <charconv>
#include <cstddef>
#include <initializer_list>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "base/error.h"
#include "comm/communicator.h"
#include "runtime/agreement.h"
#include "runtime/checkpoint.h"
#include "runtime/moe_layer.h"
#include "runtime/switchyard.h"

namespace sy = switchyard;

struct sy_context {
  std::unique_ptr<sy::comm::Communicator> comm;
  std::string alltoall = "flat";
  std::string last_error;
  std::atomic<bool> aborted{false};  // sy_context_abort, from any thread
};

struct sy_layer {
  sy_context* context = nullptr;
  std::unique_ptr<sy::MoeLayer<float>> layer;
  std::string last_error;
  // sy_layer_report_param_changes: the caller reports writes to bound parameters itself.
  bool param_changes_reported = false;
};

struct sy_saved {
  const sy_layer* layer = nullptr;
  std::unique_ptr<sy::MoeSaved<float>> state;
  bool used = false;  // its backward ran: a second would add the gradients again
};

namespace {

thread_local std::string creation_error;

sy_status_t status_of(sy::ErrorCode code) {
  switch (code) {
    case sy::ErrorCode::invalid_argument: return SY_INVALID_ARGUMENT;
    case sy::ErrorCode::unsupported: return SY_UNSUPPORTED;
    case sy::ErrorCode::out_of_memory: return SY_OUT_OF_MEMORY;
    case sy::ErrorCode::timeout: return SY_TIMEOUT;
    case sy::ErrorCode::peer_failure: return SY_PEER_FAILURE;
    case sy::ErrorCode::internal: return SY_INTERNAL;
    case sy::ErrorCode::aborted: return SY_ABORTED;
  }
  return SY_INTERNAL;
}

// Runs body; any exception becomes a status, its message stored in `message`.
template <typename Body>
sy_status_t guarded(std::string& message, Body&& body) {
  try {
    body();
    return SY_OK;
  } catch (const sy::Error& e) {  // comm's CommError too: the same type
    message = e.what();
    return status_of(e.code());
  } catch (const std::bad_alloc&) {
    message = "out of memory";
    return SY_OUT_OF_MEMORY;
  } catch (const std::invalid_argument& e) {
    message = e.what();
    return SY_INVALID_ARGUMENT;
  } catch (const std::exception& e) {
    message = std::string("internal error: ") + e.what();
    return SY_INTERNAL;
  } catch (...) {
    message = "internal error: unknown exception";
    return SY_INTERNAL;
  }
}

void require_arg(bool cond, const std::string& message) { sy::require(cond, message); }

// The caller's struct as this library's. Its size says which header it was compiled against:
// the struct of that version is copied and the fields it lacks keep this library's defaults
// (`defaults`, the SY_*_INIT values); a size of no released version (e.g. a newer header than
// this library) is refused. versions: {struct size, bytes of its fields} of each released
// version, oldest first.
template <typename Struct>
Struct accepted_struct(const Struct& given, const Struct& defaults,
                       std::initializer_list<std::pair<size_t, size_t>> versions, const char* type,
                       const char* init) {
  std::string sizes;
  for (const auto& [size, fields] : versions) {
    if (given.size == size) {
      Struct out = defaults;
      std::memcpy(static_cast<void*>(&out), &given, fields);
      out.size = sizeof(Struct);
      return out;
    }
    sizes += (sizes.empty() ? "" : ", ") + std::to_string(size);
  }
  throw sy::Error(sy::ErrorCode::invalid_argument,
                  fmt::format("{}.size is {}, the size of no version of it this library knows "
                              "({}); initialise the struct with {} (a header newer than the "
                              "library needs a newer library)",
                              type, given.size, sizes, init));
}

// sy_layer_config_t of 0.1 and 0.2 ended with `wire`; 0.3 added backend and compute.
constexpr size_t kLayerConfigFields02 = offsetof(sy_layer_config_t, backend);
constexpr size_t kLayerConfigSize02 =
    (kLayerConfigFields02 + alignof(sy_layer_config_t) - 1) / alignof(sy_layer_config_t) *
    alignof(sy_layer_config_t);

sy_status_t aborted_status(std::string& message) {
  message = "the context was aborted (sy_context_abort); only destroy calls are accepted";
  return SY_ABORTED;
}

constexpr std::string_view kBiasName = "gate.e_score_correction_bias";

// A parameter (or gradient) tensor of params by Hugging Face name; the selection bias, which the
// layer keeps apart from its parameters, is not one of them.
sy::ParamTensor<float>& find_tensor(sy::MoeLayer<float>& layer, sy::MoeParams<float>& params,
                                    std::string_view name) {
  const auto& c = layer.config();
  if (name == "gate.weight") return params.gate_weight;
  auto pick = [&](sy::SwigluParams<float>& p, std::string_view proj) -> sy::ParamTensor<float>& {
    if (proj == "gate_proj.weight") return p.gate_proj;
    if (proj == "up_proj.weight") return p.up_proj;
    if (proj == "down_proj.weight") return p.down_proj;
    throw sy::Error(sy::ErrorCode::invalid_argument,
                    fmt::format("'{}': unknown projection '{}'; use gate_proj.weight, "
                                "up_proj.weight or down_proj.weight",
                                name, proj));
  };
  constexpr std::string_view shared_prefix = "shared_experts.";
  constexpr std::string_view expert_prefix = "experts.";
  if (name.starts_with(shared_prefix)) {
    require_arg(c.num_shared > 0, fmt::format("'{}': this layer has no shared experts "
                                              "(num_shared = 0)",
                                              name));
    return pick(params.shared, name.substr(shared_prefix.size()));
  }
  if (name.starts_with(expert_prefix)) {
    const std::string_view rest = name.substr(expert_prefix.size());
    int expert = -1;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), expert);
    require_arg(ec == std::errc() && end < rest.data() + rest.size() && *end == '.',
                fmt::format("'{}': expected experts.<id>.<projection>", name));
    require_arg(expert >= 0 && expert < c.num_experts,
                fmt::format("'{}': expert {} is outside [0, num_experts = {})", name, expert,
                            c.num_experts));
    const int local = params.local_index(expert);
    require_arg(local >= 0, fmt::format("'{}': expert {} is held by rank {}, not by this rank; ask "
                                        "sy_layer_local_experts which experts to set",
                                        name, expert, layer.placement().owner(expert)));
    const size_t consumed = static_cast<size_t>(end - rest.data()) + 1;
    return pick(params.experts[local], rest.substr(consumed));
  }
  throw sy::Error(sy::ErrorCode::invalid_argument,
                  fmt::format("unknown parameter '{}'; names follow Hugging Face's DeepSeek layout, "
                              "e.g. gate.weight, experts.3.up_proj.weight, "
                              "shared_experts.down_proj.weight",
                              name));
}

// The memory of a parameter (params = the layer's parameters, the selection bias included) or of
// a gradient (params = its gradients).
std::span<float> find_memory(sy::MoeLayer<float>& layer, sy::MoeParams<float>& params,
                             const char* name, bool gradient) {
  require_arg(name != nullptr, "parameter name is NULL");
  if (name == kBiasName) {
    require_arg(!gradient, "gate.e_score_correction_bias has no gradient: it is a selection "
                           "bias updated by sy_layer_update_selection_bias");
    return layer.selection_bias();
  }
  return find_tensor(layer, params, name);
}

sy::MoeConfig to_config(const sy_layer_config_t& c) {
  sy::MoeConfig m;
  m.hidden = c.hidden;
  m.num_experts = c.num_experts;
  m.num_shared = c.num_shared;
  m.top_k = c.top_k;
  m.intermediate = c.intermediate;
  require_arg(c.scoring == SY_SCORE_SOFTMAX || c.scoring == SY_SCORE_SIGMOID,
              fmt::format("sy_layer_config_t.scoring = {} is not a sy_score_func_t",
                          static_cast<int>(c.scoring)));
  m.scoring = c.scoring == SY_SCORE_SOFTMAX ? sy::kernels::ScoreFunc::softmax
                                            : sy::kernels::ScoreFunc::sigmoid;
  m.norm_topk_prob = c.norm_topk_prob != 0;
  m.routed_scaling_factor = c.routed_scaling_factor;
  m.n_group = c.n_group;
  m.topk_group = c.topk_group;
  require_arg(c.group_score == SY_GROUP_SCORE_TOP2_SUM || c.group_score == SY_GROUP_SCORE_MAX,
              fmt::format("sy_layer_config_t.group_score = {} is not a sy_group_score_t",
                          static_cast<int>(c.group_score)));
  m.group_score = c.group_score == SY_GROUP_SCORE_MAX ? sy::kernels::GroupScore::max
                                                      : sy::kernels::GroupScore::top2_sum;
  m.selection_bias = c.selection_bias != 0;
  m.bias_update_rate = c.bias_update_rate;
  m.aux_expert_alpha = c.aux_expert_alpha;
  m.aux_device_alpha = c.aux_device_alpha;
  m.z_loss_alpha = c.z_loss_alpha;
  require_arg(c.wire == SY_WIRE_NATIVE || c.wire == SY_WIRE_BF16,
              fmt::format("sy_layer_config_t.wire = {} is not a sy_wire_precision_t; use "
                          "SY_WIRE_NATIVE or SY_WIRE_BF16",
                          static_cast<int>(c.wire)));
  m.wire = c.wire == SY_WIRE_BF16 ? sy::WirePrecision::bf16 : sy::WirePrecision::native;
  return m;
}

// Entry guard for calls on a layer: NULL and aborted handles are answered here.
template <typename Body>
sy_status_t on_layer(sy_layer_t layer, Body&& body) {
  if (layer == nullptr) {
    creation_error = "NULL sy_layer_t";
    return SY_INVALID_ARGUMENT;
  }
  if (layer->context->aborted) return aborted_status(layer->last_error);
  return guarded(layer->last_error, [&] { body(*layer); });
}

template <typename Body>
sy_status_t on_context(sy_context_t context, Body&& body) {
  if (context == nullptr) {
    creation_error = "NULL sy_context_t";
    return SY_INVALID_ARGUMENT;
  }
  if (context->aborted) return aborted_status(context->last_error);
  return guarded(context->last_error, [&] { body(*context); });
}

}  // namespace

extern "C" {

const char* sy_status_string(sy_status_t status) {
  switch (status) {
    case SY_OK: return "success";
    case SY_INVALID_ARGUMENT: return "invalid argument";
    case SY_UNSUPPORTED: return "unsupported";
    case SY_OUT_OF_MEMORY: return "out of memory";
    case SY_TIMEOUT: return "timed out waiting for a peer";
    case SY_PEER_FAILURE: return "peer failure";
    case SY_INTERNAL: return "internal error";
    case SY_ABORTED: return "context aborted";
  }
  return "unknown status";
}

int sy_version(void) { return SY_VERSION_CODE; }

sy_status_t sy_context_create_mpi(int64_t mpi_fortran_comm, const sy_context_params_t* params,
                                  sy_context_t* context) {
  return guarded(creation_error, [&] {
    require_arg(context != nullptr, "sy_context_create_mpi: context (the output) is NULL");
    *context = nullptr;
    require_arg(params != nullptr, "sy_context_create_mpi: params is NULL; pass a "
                                   "sy_context_params_t initialised with SY_CONTEXT_PARAMS_INIT");
    accepted_struct<sy_context_params_t>(*params, SY_CONTEXT_PARAMS_INIT,
                                         {{sizeof(sy_context_params_t), sizeof(sy_context_params_t)}},
                                         "sy_context_params_t", "SY_CONTEXT_PARAMS_INIT");
    int initialized = 0;
    MPI_Initialized(&initialized);
    require_arg(initialized != 0, "sy_context_create_mpi: MPI is not initialised; call MPI_Init "
                                  "(or import mpi4py) first");
    require_arg(params->timeout_ms >= 0,
                fmt::format("sy_context_params_t.timeout_ms must be >= 0, got {}",
                            params->timeout_ms));
    MPI_Comm comm = MPI_Comm_f2c(static_cast<MPI_Fint>(mpi_fortran_comm));
    require_arg(comm != MPI_COMM_NULL, "sy_context_create_mpi: the communicator is MPI_COMM_NULL");
    sy::comm::CommOptions options;
    if (params->timeout_ms > 0) options.timeout = std::chrono::milliseconds(params->timeout_ms);
    auto ctx = std::make_unique<sy_context>();
    if (params->alltoall != nullptr) ctx->alltoall = params->alltoall;
    ctx->comm = std::make_unique<sy::comm::Communicator>(comm, options);
    *context = ctx.release();
  });
}

sy_status_t sy_context_create_store(const sy_store_params_t* params, sy_context_t* context) {
  return guarded(creation_error, [&] {
    require_arg(context != nullptr, "sy_context_create_store: context (the output) is NULL");
    *context = nullptr;
    require_arg(params != nullptr, "sy_context_create_store: params is NULL; pass a "
                                   "sy_store_params_t initialised with SY_STORE_PARAMS_INIT");
    accepted_struct<sy_store_params_t>(*params, SY_STORE_PARAMS_INIT,
                                       {{sizeof(sy_store_params_t), sizeof(sy_store_params_t)}},
                                       "sy_store_params_t", "SY_STORE_PARAMS_INIT");
    require_arg(params->timeout_ms >= 0,
                fmt::format("sy_store_params_t.timeout_ms must be >= 0, got {}",
                            params->timeout_ms));
    sy::comm::CommOptions options;
    if (params->timeout_ms > 0) options.timeout = std::chrono::milliseconds(params->timeout_ms);
    sy::comm::StoreOptions store;
    if (params->master_addr != nullptr) store.master_addr = params->master_addr;
    store.master_port = params->master_port;
    store.rank = params->rank;
    store.world_size = params->world_size;
    store.local_rank = params->local_rank;
    if (params->secret != nullptr) store.secret = params->secret;
    store.timeout = options.timeout;
    auto ctx = std::make_unique<sy_context>();
    if (params->alltoall != nullptr) ctx->alltoall = params->alltoall;
    ctx->comm = std::make_unique<sy::comm::Communicator>(store.resolved(), options);
    *context = ctx.release();
  });
}

sy_status_t sy_context_rank(sy_context_t context, int* rank) {
  return on_context(context, [&](sy_context& c) {
    require_arg(rank != nullptr, "sy_context_rank: rank is NULL");
    *rank = c.comm->rank();
  });
}

sy_status_t sy_context_size(sy_context_t context, int* size) {
  return on_context(context, [&](sy_context& c) {
    require_arg(size != nullptr, "sy_context_size: size is NULL");
    *size = c.comm->size();
  });
}

sy_status_t sy_context_topology(sy_context_t context, int* node, int* num_nodes, int* local_rank,
                                int* local_size) {
  return on_context(context, [&](sy_context& c) {
    require_arg(node && num_nodes && local_rank && local_size,
                "sy_context_topology: every output pointer must be non-NULL");
    const auto& t = c.comm->topology();
    *node = t.node;
    *num_nodes = t.num_nodes;
    *local_rank = t.local_rank;
    *local_size = t.local_size;
  });
}

sy_status_t sy_context_abort(sy_context_t context) {
  if (context == nullptr) {
    creation_error = "sy_context_abort: NULL sy_context_t";
    return SY_INVALID_ARGUMENT;
  }
  // Safe from any thread: both are atomic stores. A wait in progress on this context gives up with
  // SY_ABORTED (its layer then refuses further calls); later calls are refused here.
  context->aborted.store(true);
  if (context->comm) context->comm->interrupt();
  return SY_OK;
}

sy_status_t sy_context_destroy(sy_context_t context) {
  delete context;
  return SY_OK;
}

const char* sy_context_last_error(sy_context_t context) {
  return context == nullptr ? creation_error.c_str() : context->last_error.c_str();
}

sy_status_t sy_layer_create(sy_context_t context, const sy_layer_config_t* config,
                            sy_layer_t* layer) {
  return on_context(context, [&](sy_context& c) {
    // Every check of this rank's arguments goes into the status that MoeLayer's creation compares
    // across ranks: a rank whose arguments are wrong fails the call on every rank, and ranks whose
    // (valid) configurations differ are told which fields differ.
    sy::LocalStatus status;
    sy::MoeConfig moe;
    sy::LayerOptions options{c.alltoall, {}, {}};
    std::optional<sy::planner::ExpertPlacement> placement;
    status.capture([&] {
      require_arg(layer != nullptr, "sy_layer_create: layer (the output) is NULL");
      *layer = nullptr;
      require_arg(config != nullptr, "sy_layer_create: config is NULL; pass a sy_layer_config_t "
                                     "initialised with SY_LAYER_CONFIG_INIT");
      const sy_layer_config_t given = accepted_struct<sy_layer_config_t>(
          *config, SY_LAYER_CONFIG_INIT,
          {{kLayerConfigSize02, kLayerConfigFields02},
           {sizeof(sy_layer_config_t), sizeof(sy_layer_config_t)}},
          "sy_layer_config_t", "SY_LAYER_CONFIG_INIT");
      moe = to_config(given);
      moe.validate();
      require_arg(given.overlap >= SY_OVERLAP_OFF && given.overlap <= SY_OVERLAP_AUTO,
                  fmt::format("sy_layer_config_t.overlap = {} is not a sy_overlap_mode_t; use "
                              "SY_OVERLAP_OFF, SY_OVERLAP_ON or SY_OVERLAP_AUTO",
                              static_cast<int>(given.overlap)));
      const sy::OverlapMode modes[] = {sy::OverlapMode::off, sy::OverlapMode::on,
                                       sy::OverlapMode::automatic};
      require_arg(given.backend >= SY_BACKEND_DEFAULT && given.backend <= SY_BACKEND_ONEDNN,
                  fmt::format("sy_layer_config_t.backend = {} is not a sy_backend_t; use "
                              "SY_BACKEND_DEFAULT, SY_BACKEND_OPENBLAS or SY_BACKEND_ONEDNN",
                              static_cast<int>(given.backend)));
      require_arg(given.compute == SY_COMPUTE_NATIVE || given.compute == SY_COMPUTE_BF16,
                  fmt::format("sy_layer_config_t.compute = {} is not a sy_compute_precision_t; "
                              "use SY_COMPUTE_NATIVE or SY_COMPUTE_BF16",
                              static_cast<int>(given.compute)));
      const char* backends[] = {"", "openblas", "onednn"};
      options.overlap = sy::OverlapOptions{modes[given.overlap], given.overlap_chunks};
      options.backend = sy::kernels::BackendOptions{
          backends[given.backend], given.compute == SY_COMPUTE_BF16
                                         ? sy::kernels::ComputePrecision::bf16
                                         : sy::kernels::ComputePrecision::native};
      placement = sy::planner::ExpertPlacement::contiguous(moe.num_experts, c.comm->size());
    });
    auto handle = std::make_unique<sy_layer>();
    handle->context = &c;
    // A rank whose checks failed joins the creation's collective with a placeholder placement.
    handle->layer = std::make_unique<sy::MoeLayer<float>>(
        moe, *c.comm,
        placement ? *placement : sy::planner::ExpertPlacement::contiguous(1, c.comm->size()),
        options, status);
    *layer = handle.release();
  });
}

sy_status_t sy_layer_destroy(sy_layer_t layer) {
  delete layer;
  return SY_OK;
}

const char* sy_layer_last_error(sy_layer_t layer) {
  return layer == nullptr ? creation_error.c_str() : layer->last_error.c_str();
}

sy_status_t sy_layer_local_experts(sy_layer_t layer, int* ids, int capacity, int* count) {
  return on_layer(layer, [&](sy_layer& l) {
    require_arg(count != nullptr, "sy_layer_local_experts: count is NULL");
    const auto& held = l.layer->params().expert_ids;
    *count = static_cast<int>(held.size());
    if (ids == nullptr) return;
    require_arg(capacity >= 0, "sy_layer_local_experts: capacity must be >= 0");
    for (int i = 0; i < capacity && i < *count; ++i) ids[i] = held[i];
  });
}

namespace {

void require_count(const char* name, size_t size, size_t count) {
  require_arg(count == size, fmt::format("'{}' has {} elements but count is {}", name, size, count));
}

// The memory of a parameter (or gradient), with count checked against it.
std::span<float> counted_memory(sy_layer& l, sy::MoeParams<float>& params, const char* name,
                                const void* data, size_t count, bool gradient) {
  std::span<float> t = find_memory(*l.layer, params, name, gradient);
  require_count(name, t.size(), count);
  require_arg(data != nullptr || count == 0, fmt::format("'{}': data is NULL", name));
  return t;
}

void bind_tensor(sy_layer& l, sy::MoeParams<float>& params, const char* name, float* data,
                 size_t count, bool gradient, bool fresh = false) {
  require_arg(name != nullptr, "parameter name is NULL");
  require_arg(name != kBiasName,
              gradient ? "gate.e_score_correction_bias has no gradient: it is a selection bias "
                         "updated by sy_layer_update_selection_bias"
                       : "gate.e_score_correction_bias cannot be bound: the layer keeps the "
                         "selection bias (num_experts floats) itself; copy it with "
                         "sy_layer_set_param / sy_layer_get_param");
  sy::ParamTensor<float>& t = find_tensor(*l.layer, params, name);
  require_count(name, t.size(), count);
  if (data == nullptr) {
    require_arg(!fresh, fmt::format("sy_layer_bind_fresh_grad: '{}': data is NULL", name));
    t.unbind();
  } else if (fresh) {
    t.bind_fresh(data, count);
  } else {
    t.bind(data, count);
  }
}

void tensor_data(sy_layer& l, sy::MoeParams<float>& params, const char* name, float** data,
                 size_t* count, bool gradient) {
  require_arg(data != nullptr && count != nullptr, "data and count (the outputs) must be non-NULL");
  std::span<float> t = find_memory(*l.layer, params, name, gradient);
  *data = t.data();
  *count = t.size();
}

}  // namespace

sy_status_t sy_layer_set_param(sy_layer_t layer, const char* name, const float* data,
                               size_t count) {
  return on_layer(layer, [&](sy_layer& l) {
    std::span<float> t = counted_memory(l, l.layer->params(), name, data, count, false);
    std::copy_n(data, count, t.begin());
  });
}

sy_status_t sy_layer_get_param(sy_layer_t layer, const char* name, float* data, size_t count) {
  return on_layer(layer, [&](sy_layer& l) {
    std::span<const float> t = counted_memory(l, l.layer->params(), name, data, count, false);
    std::copy(t.begin(), t.end(), data);
  });
}

sy_status_t sy_layer_get_grad(sy_layer_t layer, const char* name, float* data, size_t count) {
  return on_layer(layer, [&](sy_layer& l) {
    std::span<const float> t = counted_memory(l, l.layer->grads(), name, data, count, true);
    find_tensor(*l.layer, l.layer->grads(), name).zero_if_fresh();  // none yet: zeros
    std::copy(t.begin(), t.end(), data);
  });
}

sy_status_t sy_layer_bind_param(sy_layer_t layer, const char* name, float* data, size_t count) {
  return on_layer(layer, [&](sy_layer& l) {
    bind_tensor(l, l.layer->params(), name, data, count, false);
  });
}

sy_status_t sy_layer_bind_grad(sy_layer_t layer, const char* name, float* data, size_t count) {
  return on_layer(layer, [&](sy_layer& l) {
    bind_tensor(l, l.layer->grads(), name, data, count, true);
  });
}

sy_status_t sy_layer_bind_fresh_grad(sy_layer_t layer, const char* name, float* data,
                                     size_t count) {
  return on_layer(layer, [&](sy_layer& l) {
    bind_tensor(l, l.layer->grads(), name, data, count, true, true);
  });
}

sy_status_t sy_layer_report_param_changes(sy_layer_t layer, int reported) {
  return on_layer(layer, [&](sy_layer& l) {
    require_arg(reported == 0 || reported == 1,
                fmt::format("sy_layer_report_param_changes: reported is {}, not 0 or 1", reported));
    // Whatever was written before the caller took over reporting is not reported: count it.
    if (reported == 1 && !l.param_changes_reported) l.layer->parameters_changed();
    l.param_changes_reported = reported == 1;
  });
}

sy_status_t sy_layer_params_changed(sy_layer_t layer) {
  return on_layer(layer, [&](sy_layer& l) { l.layer->parameters_changed(); });
}

sy_status_t sy_layer_param_data(sy_layer_t layer, const char* name, float** data, size_t* count) {
  return on_layer(layer, [&](sy_layer& l) {
    tensor_data(l, l.layer->params(), name, data, count, false);
  });
}

sy_status_t sy_layer_grad_data(sy_layer_t layer, const char* name, float** data, size_t* count) {
  return on_layer(layer, [&](sy_layer& l) {
    tensor_data(l, l.layer->grads(), name, data, count, true);
  });
}

sy_status_t sy_layer_zero_grads(sy_layer_t layer) {
  return on_layer(layer, [&](sy_layer& l) { l.layer->grads().zero(); });
}

sy_status_t sy_layer_forward(sy_layer_t layer, const float* x, int64_t tokens, int64_t hidden,
                             float* y, sy_saved_t* saved, sy_aux_losses_t* aux) {
  return on_layer(layer, [&](sy_layer& l) {
    // Checks that fail here fail the call on every rank (MoeLayer::forward carries them), so that
    // no peer pairs this call with its next one.
    sy::LocalStatus status;
    status.capture([&] {
      require_arg(saved != nullptr, "sy_layer_forward: saved (the output) is NULL");
      *saved = nullptr;
    });
    // Bound parameters change in the caller's memory (an optimizer step) with no call to say
    // so, unless the caller reports changes: the backend drops what it derived from them (a bf16
    // copy), as sy_layer_set_param does.
    if (!l.param_changes_reported && std::as_const(*l.layer).params().any_bound()) {
      l.layer->parameters_changed();
    }
    auto result = l.layer->forward(x, tokens, hidden, y, status);
    auto handle = std::make_unique<sy_saved>();
    handle->layer = &l;
    handle->state = std::move(result.saved);
    if (aux != nullptr) {
      *aux = {result.aux.expert_balance, result.aux.device_balance, result.aux.z_loss};
    }
    *saved = handle.release();
  });
}

sy_status_t sy_layer_backward(sy_layer_t layer, sy_saved_t saved, const float* grad_y,
                              float* grad_x) {
  return on_layer(layer, [&](sy_layer& l) {
    sy::LocalStatus status;
    status.capture([&] {
      require_arg(saved != nullptr, "sy_layer_backward: saved is NULL");
      require_arg(saved->layer == &l,
                  "sy_layer_backward: saved comes from another layer's forward");
      require_arg(!saved->used, "sy_layer_backward: this forward's backward already ran (its "
                                "gradients were added once); run forward again");
    });
    // A rank whose checks failed still joins the call's first collective, with nothing to do.
    static const sy::MoeSaved<float> nothing;
    l.layer->backward(status.failed() ? nothing : *saved->state, grad_y, grad_x, status);
    saved->used = true;
  });
}

sy_status_t sy_saved_destroy(sy_saved_t saved) {
  delete saved;
  return SY_OK;
}

sy_status_t sy_layer_expert_load(sy_layer_t layer, double* load, int num_experts) {
  return on_layer(layer, [&](sy_layer& l) {
    const auto& counts = l.layer->last_expert_load();
    require_arg(load != nullptr, "sy_layer_expert_load: load is NULL");
    require_arg(num_experts == static_cast<int>(counts.size()),
                fmt::format("sy_layer_expert_load: num_experts is {} but the layer has {}",
                            num_experts, counts.size()));
    std::copy(counts.begin(), counts.end(), load);
  });
}

sy_status_t sy_layer_apply_placement(sy_layer_t layer, const int* phy2log, int num_slots) {
  return on_layer(layer, [&](sy_layer& l) {
    // A placement one rank cannot read fails the call on every rank (apply_placement carries it).
    sy::LocalStatus status;
    std::optional<sy::planner::ExpertPlacement> next;
    status.capture([&] {
      require_arg(phy2log != nullptr && num_slots > 0,
                  "sy_layer_apply_placement: phy2log must hold num_slots > 0 entries");
      next = sy::planner::ExpertPlacement::from_slots(
          std::span<const int>(phy2log, static_cast<size_t>(num_slots)),
          l.layer->config().num_experts, l.context->comm->size());
    });
    l.layer->apply_placement(next ? *next : l.layer->placement(), {}, status);
  });
}

sy_status_t sy_layer_update_selection_bias(sy_layer_t layer) {
  return on_layer(layer, [&](sy_layer& l) { l.layer->update_selection_bias(); });
}

sy_status_t sy_layer_save(sy_layer_t layer, const char* dir, int64_t step) {
  return on_layer(layer, [&](sy_layer& l) {
    // A NULL dir fails inside the save, on every rank together.
    sy::checkpoint::save<float>(*l.context->comm, dir != nullptr ? dir : "", step, *l.layer,
                                nullptr, {{"step", step}});
  });
}

sy_status_t sy_layer_load(sy_layer_t layer, const char* path, int keep_placement, int64_t* step) {
  return on_layer(layer, [&](sy_layer& l) {
    const auto info =
        sy::checkpoint::load<float>(*l.context->comm, path != nullptr ? path : "", *l.layer,
                                    nullptr, {.restore_placement = keep_placement == 0});
    if (step != nullptr) *step = info.step;
  });
}

}  // extern "C"
