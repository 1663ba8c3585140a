/* Caller-owned memory (sy_layer_bind_param / sy_layer_bind_grad): the layer reads bound parameters
 * and accumulates bound gradients in the caller's arrays, in place; wrong names and counts are
 * refused without changing anything; unbinding keeps the values; a placement change keeps the
 * parameter bindings of what stays and releases the gradient bindings; with bf16 compute, writes
 * are seen at every forward or, when the caller reports them, from the report on; fresh gradient
 * memory is written, not added to. Checked against a second layer that gets the same values by
 * copy. Runs under mpirun on 1 and 2 ranks. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "switchyard.h"
#include "check.h"

#define H 6
#define I 4
#define E 2
#define N (I * H) /* elements of every tensor but the gate */
#define TOKENS 5

static const char* const kProj[3] = {"gate_proj", "up_proj", "down_proj"};

/* The caller's tensors: the gate, the shared experts' three, then three per routed expert. */
enum { kGate = 0, kShared = 1, kExperts = 4, kTensors = kExperts + 3 * E };

typedef struct {
  float param[kTensors][E * H > N ? E * H : N];
  float grad[kTensors][E * H > N ? E * H : N];
} caller_t;

static void tensor_name(int t, char* out, size_t n) {
  if (t == kGate) {
    snprintf(out, n, "gate.weight");
  } else if (t < kExperts) {
    snprintf(out, n, "shared_experts.%s.weight", kProj[t - kShared]);
  } else {
    snprintf(out, n, "experts.%d.%s.weight", (t - kExperts) / 3, kProj[(t - kExperts) % 3]);
  }
}

static size_t tensor_count(int t) { return t == kGate ? E * H : N; }

static int holds(sy_layer_t layer, int expert) {
  int ids[E], held = 0;
  sy_layer_local_experts(layer, ids, E, &held);
  for (int i = 0; i < held; ++i) {
    if (ids[i] == expert) return 1;
  }
  return 0;
}

/* Tensors this rank has: the replicated ones and the experts it holds. */
static int present(sy_layer_t layer, int t) {
  return t < kExperts || holds(layer, (t - kExperts) / 3);
}

static float weight(int t, int i) { return 0.3f * sinf(0.7f * (float)i + 1.3f * (float)t); }

static sy_layer_config_t layer_config(void) {
  sy_layer_config_t c = SY_LAYER_CONFIG_INIT;
  c.hidden = H;
  c.num_experts = E;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = I;
  return c;
}

static sy_layer_t make_layer(sy_context_t ctx) {
  const sy_layer_config_t c = layer_config();
  sy_layer_t layer = NULL;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "%s", sy_context_last_error(ctx));
  return layer;
}

/* Binds (or, with bind 0, copies in) every present parameter from the caller's arrays. */
static void give_params(sy_layer_t layer, caller_t* m, int bind) {
  for (int t = 0; t < kTensors; ++t) {
    if (!present(layer, t)) continue;
    char name[64];
    tensor_name(t, name, sizeof name);
    const sy_status_t s = bind ? sy_layer_bind_param(layer, name, m->param[t], tensor_count(t))
                               : sy_layer_set_param(layer, name, m->param[t], tensor_count(t));
    CHECK(s == SY_OK, "%s: %s", name, sy_layer_last_error(layer));
  }
}

static void bind_grads(sy_layer_t layer, caller_t* m) {
  for (int t = 0; t < kTensors; ++t) {
    if (!present(layer, t)) continue;
    char name[64];
    tensor_name(t, name, sizeof name);
    CHECK(sy_layer_bind_grad(layer, name, m->grad[t], tensor_count(t)) == SY_OK, "%s: %s", name,
          sy_layer_last_error(layer));
  }
}

static void step(sy_layer_t layer, const float* x, float* y) {
  float grad_x[TOKENS * H], ones[TOKENS * H];
  for (int i = 0; i < TOKENS * H; ++i) ones[i] = 1.0f;
  sy_saved_t saved = NULL;
  CHECK(sy_layer_forward(layer, x, TOKENS, H, y, &saved, NULL) == SY_OK, "%s",
        sy_layer_last_error(layer));
  CHECK(sy_layer_backward(layer, saved, ones, grad_x) == SY_OK, "%s", sy_layer_last_error(layer));
  sy_saved_destroy(saved);
}

static double rel_diff(const float* a, const float* b, size_t n) {
  double d = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    s += (double)b[i] * b[i];
  }
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

static void test_refusals(sy_layer_t layer, caller_t* m) {
  float* data = NULL;
  size_t count = 0;
  CHECK(sy_layer_bind_param(layer, "gate.weight", m->param[kGate], E * H + 1) ==
            SY_INVALID_ARGUMENT,
        "wrong count accepted");
  CHECK(strstr(sy_layer_last_error(layer), "count") != NULL, "message: %s",
        sy_layer_last_error(layer));
  CHECK(sy_layer_param_data(layer, "gate.weight", &data, &count) == SY_OK &&
            data != m->param[kGate] && count == E * H,
        "a refused bind changed the tensor");
  CHECK(sy_layer_bind_grad(layer, "gate.wieght", m->grad[kGate], E * H) == SY_INVALID_ARGUMENT &&
            strstr(sy_layer_last_error(layer), "gate.wieght") != NULL,
        "unknown name accepted: %s", sy_layer_last_error(layer));
  CHECK(sy_layer_bind_param(layer, NULL, m->param[kGate], E * H) == SY_INVALID_ARGUMENT,
        "NULL name accepted");
  CHECK(sy_layer_bind_param(layer, "gate.e_score_correction_bias", m->param[kGate], E) ==
                SY_INVALID_ARGUMENT &&
            strstr(sy_layer_last_error(layer), "sy_layer_set_param") != NULL,
        "the selection bias was bound: %s", sy_layer_last_error(layer));
  CHECK(sy_layer_bind_grad(layer, "gate.e_score_correction_bias", m->grad[kGate], E) ==
                SY_INVALID_ARGUMENT &&
            strstr(sy_layer_last_error(layer), "no gradient") != NULL,
        "a selection bias gradient was bound: %s", sy_layer_last_error(layer));
  CHECK(sy_layer_param_data(layer, "gate.e_score_correction_bias", &data, &count) == SY_OK &&
            count == E,
        "the bias's memory: %s", sy_layer_last_error(layer));
  CHECK(sy_layer_grad_data(layer, "gate.weight", NULL, &count) == SY_INVALID_ARGUMENT,
        "NULL output accepted");
  CHECK(sy_layer_bind_param(NULL, "gate.weight", m->param[kGate], E * H) == SY_INVALID_ARGUMENT,
        "NULL layer accepted");
  for (int e = 0; e < E; ++e) {
    if (holds(layer, e)) continue;
    char name[64];
    snprintf(name, sizeof name, "experts.%d.up_proj.weight", e);
    CHECK(sy_layer_bind_param(layer, name, m->param[kExperts + 3 * e + 1], N) ==
                  SY_INVALID_ARGUMENT &&
              strstr(sy_layer_last_error(layer), "held by rank") != NULL,
          "another rank's expert bound: %s", sy_layer_last_error(layer));
  }
}

/* Each bound gradient against the same gradient of a layer accumulating in its own storage;
 * NaN anywhere fails (rel_diff is NaN then). */
static void check_grads_equal(sy_layer_t layer, sy_layer_t ref, caller_t* m, const char* when) {
  for (int t = 0; t < kTensors; ++t) {
    if (!present(layer, t)) continue;
    char name[64];
    float want[E * H > N ? E * H : N];
    tensor_name(t, name, sizeof name);
    CHECK(sy_layer_get_grad(ref, name, want, tensor_count(t)) == SY_OK, "get grad");
    CHECK(rel_diff(m->grad[t], want, tensor_count(t)) < 1e-6, "%s: %s: gradient differs", when,
          name);
  }
}

/* Layer `bound` works on m's arrays, layer `copied` gets the same values by sy_layer_set_param:
 * the same outputs and gradients, and a change to m's arrays is seen with no call in between. */
static void test_in_place(sy_layer_t bound, sy_layer_t copied, caller_t* m) {
  float x[TOKENS * H], y[TOKENS * H], y_want[TOKENS * H];
  for (int i = 0; i < TOKENS * H; ++i) x[i] = cosf(0.9f * (float)i + (float)rank);
  give_params(bound, m, 1);
  give_params(copied, m, 0);
  float* data = NULL;
  size_t count = 0;
  for (int t = 0; t < kTensors; ++t) {
    if (!present(bound, t)) continue;
    char name[64];
    tensor_name(t, name, sizeof name);
    CHECK(sy_layer_param_data(bound, name, &data, &count) == SY_OK && data == m->param[t] &&
              count == tensor_count(t),
          "%s is not read from the caller's memory", name);
  }

  /* Gradients accumulate onto what the caller's memory holds: two steps from zero. */
  memset(m->grad, 0, sizeof m->grad);
  bind_grads(bound, m);
  CHECK(sy_layer_zero_grads(copied) == SY_OK, "zero grads");
  for (int s = 0; s < 2; ++s) {
    step(bound, x, y);
    step(copied, x, y_want);
    CHECK(rel_diff(y, y_want, TOKENS * H) < 1e-6, "outputs differ at step %d", s);
  }
  check_grads_equal(bound, copied, m, "accumulated over two steps");
  for (int t = 0; t < kTensors; ++t) {
    if (!present(bound, t)) continue;
    char name[64];
    tensor_name(t, name, sizeof name);
    CHECK(sy_layer_grad_data(bound, name, &data, &count) == SY_OK && data == m->grad[t],
          "%s: gradient not accumulated in the caller's memory", name);
  }

  /* An optimizer step in the caller's memory: read with no call in between. */
  for (int i = 0; i < E * H; ++i) m->param[kGate][i] *= 0.5f;
  float gate[E * H];
  CHECK(sy_layer_get_param(bound, "gate.weight", gate, E * H) == SY_OK &&
            memcmp(gate, m->param[kGate], sizeof gate) == 0,
        "the layer did not see the caller's change");
  give_params(copied, m, 0);
  step(bound, x, y);
  step(copied, x, y_want);
  CHECK(rel_diff(y, y_want, TOKENS * H) < 1e-6, "outputs differ after the caller's change");

  CHECK(sy_layer_zero_grads(bound) == SY_OK && m->grad[kGate][0] == 0.0f,
        "sy_layer_zero_grads did not zero the bound gradient");

  /* Unbinding keeps the values, in the layer's own storage. */
  CHECK(sy_layer_bind_param(bound, "gate.weight", NULL, E * H) == SY_OK, "%s",
        sy_layer_last_error(bound));
  CHECK(sy_layer_param_data(bound, "gate.weight", &data, &count) == SY_OK &&
            data != m->param[kGate] && memcmp(data, m->param[kGate], sizeof gate) == 0,
        "unbinding lost the values");
  m->param[kGate][0] += 1.0f;
  CHECK(sy_layer_get_param(bound, "gate.weight", gate, E * H) == SY_OK &&
            gate[0] != m->param[kGate][0],
        "an unbound parameter still follows the caller's memory");
  CHECK(sy_layer_bind_param(bound, "gate.weight", NULL, E * H) == SY_OK, "unbinding twice");
  CHECK(sy_layer_bind_param(bound, "gate.weight", m->param[kGate], E * H) == SY_OK, "rebind");
}

/* Every expert weight (the shared experts' too) of the caller's arrays times 0.5: what an optimizer
 * step does to the GEMM operands, the gate left as it was (the router reads it in fp32). */
static void halve_expert_weights(caller_t* m) {
  for (int t = kShared; t < kTensors; ++t) {
    for (size_t i = 0; i < tensor_count(t); ++i) m->param[t][i] *= 0.5f;
  }
}

/* bf16 compute keeps a converted copy of each parameter. Unreported (the default), every forward
 * converts the bound ones again and follows a write to the caller's memory. Reported
 * (sy_layer_report_param_changes), a write counts from sy_layer_params_changed on: until then the
 * expert GEMMs keep the copy converted at the last report, made once for any number of forwards. */
static void test_reported_changes(sy_context_t ctx, caller_t* m) {
  sy_layer_config_t c = layer_config();
  c.backend = SY_BACKEND_ONEDNN;
  c.compute = SY_COMPUTE_BF16;
  sy_layer_t bound = NULL, copied = NULL;
  if (sy_layer_create(ctx, &c, &bound) != SY_OK) {
    /* Every rank fails together: a build without oneDNN refuses the backend by name. */
    CHECK(strstr(sy_context_last_error(ctx), "onednn") != NULL, "%s", sy_context_last_error(ctx));
    if (rank == 0) printf("reported changes: skipped, %s\n", sy_context_last_error(ctx));
    return;
  }
  CHECK(sy_layer_create(ctx, &c, &copied) == SY_OK, "%s", sy_context_last_error(ctx));
  float x[TOKENS * H], y[TOKENS * H], y_before[TOKENS * H], y_want[TOKENS * H];
  for (int i = 0; i < TOKENS * H; ++i) x[i] = cosf(1.1f * (float)i + (float)rank);

  CHECK(sy_layer_report_param_changes(bound, 2) == SY_INVALID_ARGUMENT &&
            strstr(sy_layer_last_error(bound), "not 0 or 1") != NULL,
        "reported 2 accepted: %s", sy_layer_last_error(bound));
  give_params(bound, m, 1);
  CHECK(sy_layer_report_param_changes(bound, 1) == SY_OK, "%s", sy_layer_last_error(bound));
  step(bound, x, y_before);
  halve_expert_weights(m);
  step(bound, x, y);
  CHECK(memcmp(y, y_before, sizeof y) == 0,
        "reported: an unreported write reached the bf16 GEMMs (the weights were converted again)");

  CHECK(sy_layer_params_changed(bound) == SY_OK, "%s", sy_layer_last_error(bound));
  step(bound, x, y);
  give_params(copied, m, 0);
  step(copied, x, y_want);
  CHECK(memcmp(y, y_before, sizeof y) != 0 && rel_diff(y, y_want, TOKENS * H) < 1e-6,
        "reported: the output after sy_layer_params_changed is not that of the new weights");

  CHECK(sy_layer_report_param_changes(bound, 0) == SY_OK, "%s", sy_layer_last_error(bound));
  halve_expert_weights(m);
  step(bound, x, y);
  give_params(copied, m, 0);
  step(copied, x, y_want);
  CHECK(rel_diff(y, y_want, TOKENS * H) < 1e-6,
        "unreported: a write to the caller's memory is not seen by the next forward");
  sy_layer_destroy(copied);
  sy_layer_destroy(bound);
}

static void bind_fresh_nan_grads(sy_layer_t layer, caller_t* m) {
  for (int t = 0; t < kTensors; ++t) {
    if (!present(layer, t)) continue;
    char name[64];
    tensor_name(t, name, sizeof name);
    for (size_t i = 0; i < tensor_count(t); ++i) m->grad[t][i] = NAN;
    CHECK(sy_layer_bind_fresh_grad(layer, name, m->grad[t], tensor_count(t)) == SY_OK, "%s: %s",
          name, sy_layer_last_error(layer));
  }
}

/* Fresh gradient memory (sy_layer_bind_fresh_grad), filled with NaN as memory from an allocator
 * may be: read as zeros before any backward; the first backward writes the gradients a layer
 * accumulating onto zeros has, the next one adds to them; a backward of no tokens writes zeros. */
static void test_fresh_grads(sy_context_t ctx, caller_t* m) {
  sy_layer_t layer = make_layer(ctx), ref = make_layer(ctx);
  float x[TOKENS * H], y[TOKENS * H], y_want[TOKENS * H];
  for (int i = 0; i < TOKENS * H; ++i) x[i] = cosf(1.3f * (float)i + (float)rank);
  give_params(layer, m, 0);
  give_params(ref, m, 0);
  CHECK(sy_layer_zero_grads(ref) == SY_OK, "zero grads");

  CHECK(sy_layer_bind_fresh_grad(layer, "gate.weight", NULL, E * H) == SY_INVALID_ARGUMENT &&
            strstr(sy_layer_last_error(layer), "NULL") != NULL,
        "fresh NULL accepted: %s", sy_layer_last_error(layer));
  bind_fresh_nan_grads(layer, m);
  float gate[E * H];
  CHECK(sy_layer_get_grad(layer, "gate.weight", gate, E * H) == SY_OK && gate[0] == 0.0f &&
            gate[E * H - 1] == 0.0f,
        "a fresh gradient did not read as zeros");

  bind_fresh_nan_grads(layer, m);
  for (int s = 0; s < 2; ++s) {
    step(layer, x, y);
    step(ref, x, y_want);
    CHECK(rel_diff(y, y_want, TOKENS * H) < 1e-6, "outputs differ at step %d", s);
    check_grads_equal(layer, ref, m, s == 0 ? "written by the first backward" : "then added to");
  }

  /* No tokens: every gradient is zero, and no NaN is left. */
  bind_fresh_nan_grads(layer, m);
  float grad_x[1];
  sy_saved_t saved = NULL;
  CHECK(sy_layer_forward(layer, x, 0, H, y, &saved, NULL) == SY_OK &&
            sy_layer_backward(layer, saved, x, grad_x) == SY_OK,
        "%s", sy_layer_last_error(layer));
  sy_saved_destroy(saved);
  for (int t = 0; t < kTensors; ++t) {
    if (!present(layer, t)) continue;
    int zero = 1;
    for (size_t i = 0; i < tensor_count(t); ++i) zero = zero && m->grad[t][i] == 0.0f;
    CHECK(zero, "tensor %d: a backward of no tokens left the fresh gradient unwritten", t);
  }
  sy_layer_destroy(ref);
  sy_layer_destroy(layer);
}

/* Every expert on every rank: the experts a rank keeps keep their bindings, the others arrive in
 * the layer's own storage, and every gradient binding is released. */
static void test_placement(sy_context_t ctx, sy_layer_t layer, caller_t* m) {
  int size = 1;
  sy_context_size(ctx, &size);
  int kept[E];
  for (int e = 0; e < E; ++e) kept[e] = holds(layer, e);
  int phy2log[2 * 8], slots = 0;
  for (int r = 0; r < size; ++r) {
    for (int s = 0; s < 2; ++s) phy2log[slots++] = (r + 1 + s) % E;
  }
  CHECK(sy_layer_apply_placement(layer, phy2log, slots) == SY_OK, "%s",
        sy_layer_last_error(layer));
  float* data = NULL;
  size_t count = 0;
  for (int t = 0; t < kTensors; ++t) {
    char name[64];
    tensor_name(t, name, sizeof name);
    const int stays = t < kExperts || kept[(t - kExperts) / 3];
    CHECK(sy_layer_param_data(layer, name, &data, &count) == SY_OK &&
              (data == m->param[t]) == stays,
          "%s: %s after the placement", name, stays ? "binding lost" : "bound to stale memory");
    CHECK(sy_layer_grad_data(layer, name, &data, &count) == SY_OK && data != m->grad[t] &&
              data[0] == 0.0f,
          "%s: gradient binding kept after the placement", name);
  }
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  params.timeout_ms = 30000;
  sy_context_t ctx = NULL;
  CHECK(sy_context_create_mpi(MPI_Comm_c2f(MPI_COMM_WORLD), &params, &ctx) == SY_OK, "%s",
        sy_context_last_error(NULL));
  static caller_t m;
  for (int t = 0; t < kTensors; ++t) {
    for (size_t i = 0; i < tensor_count(t); ++i) m.param[t][i] = weight(t, (int)i);
  }
  sy_layer_t bound = make_layer(ctx), copied = make_layer(ctx);
  test_refusals(bound, &m);
  test_in_place(bound, copied, &m);
  test_placement(ctx, bound, &m);
  sy_layer_destroy(copied);
  sy_layer_destroy(bound);
  test_reported_changes(ctx, &m);
  test_fresh_grads(ctx, &m);
  sy_context_destroy(ctx);

  int counts[2] = {passed, failed};
  MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%d passed, %d failed\n", counts[0], counts[1]);
  MPI_Finalize();
  return counts[1] == 0 ? 0 : 1;
}
