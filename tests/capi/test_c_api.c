/* Every C API entry point, its error paths, and a numerical check of forward and backward against
 * a direct C computation of a 2-expert layer, so that the Hugging Face tensor layout is verified
 * through the API. Runs under mpirun on 1 and 2 ranks; prints "N passed, M failed". */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard.h"
#include "check.h"

#define H 6
#define I 4
#define E 2

static int contains(const char* haystack, const char* needle) {
  return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* Deterministic weights every rank can compute: value of element i of tensor `which`. */
static float weight(int which, int i) { return 0.3f * sinf(0.7f * (float)i + 1.3f * (float)which); }

static void fill(float* out, int which, int n) {
  for (int i = 0; i < n; ++i) out[i] = weight(which, i);
}

static double silu(double v) { return v / (1.0 + exp(-v)); }

/* expert(x) = down(silu(gate x) * up x) with tensors numbered `base`, `base+1`, `base+2`. */
static void ffn(int base, int inter, const float* x, double* out) {
  for (int h = 0; h < H; ++h) out[h] = 0;
  for (int i = 0; i < inter; ++i) {
    double g = 0, u = 0;
    for (int h = 0; h < H; ++h) {
      g += weight(base, i * H + h) * x[h];
      u += weight(base + 1, i * H + h) * x[h];
    }
    for (int h = 0; h < H; ++h) out[h] += weight(base + 2, h * inter + i) * silu(g) * u;
  }
}

static void test_status_and_version(void) {
  CHECK(sy_version() == SY_VERSION_CODE, "sy_version %d != header %d", sy_version(), SY_VERSION_CODE);
  for (int s = SY_OK; s <= SY_ABORTED; ++s) {
    CHECK(sy_status_string((sy_status_t)s) != NULL && strlen(sy_status_string((sy_status_t)s)) > 0,
          "status %d has no string", s);
  }
  CHECK(strcmp(sy_status_string((sy_status_t)99), "unknown status") == 0, "unknown status string");
}

static sy_context_t test_context(void) {
  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  sy_context_t ctx = NULL;
  const int64_t world = MPI_Comm_c2f(MPI_COMM_WORLD);
  CHECK(sy_context_create_mpi(world, &params, NULL) == SY_INVALID_ARGUMENT, "NULL output accepted");
  CHECK(sy_context_create_mpi(world, NULL, &ctx) == SY_INVALID_ARGUMENT, "NULL params accepted");
  CHECK(contains(sy_context_last_error(NULL), "SY_CONTEXT_PARAMS_INIT"), "message: %s",
        sy_context_last_error(NULL));
  params.size = 8;
  CHECK(sy_context_create_mpi(world, &params, &ctx) == SY_INVALID_ARGUMENT, "wrong size accepted");
  CHECK(contains(sy_context_last_error(NULL), "size") && ctx == NULL, "message: %s",
        sy_context_last_error(NULL));
  sy_context_params_t negative = SY_CONTEXT_PARAMS_INIT;
  negative.timeout_ms = -5;
  CHECK(sy_context_create_mpi(world, &negative, &ctx) == SY_INVALID_ARGUMENT,
        "negative timeout accepted");
  CHECK(contains(sy_context_last_error(NULL), "timeout_ms"), "message: %s",
        sy_context_last_error(NULL));

  sy_context_params_t good = SY_CONTEXT_PARAMS_INIT;
  good.timeout_ms = 30000;
  CHECK(sy_context_create_mpi(world, &good, &ctx) == SY_OK, "create failed: %s",
        sy_context_last_error(NULL));
  int r = -1, n = -1, node = -1, nodes = -1, local = -1, local_size = -1, mpi_size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  CHECK(sy_context_rank(ctx, &r) == SY_OK && r == rank, "rank %d", r);
  CHECK(sy_context_size(ctx, &n) == SY_OK && n == mpi_size, "size %d", n);
  CHECK(sy_context_topology(ctx, &node, &nodes, &local, &local_size) == SY_OK && node == 0 &&
            nodes == 1 && local == rank && local_size == mpi_size,
        "topology %d %d %d %d", node, nodes, local, local_size);
  CHECK(sy_context_rank(ctx, NULL) == SY_INVALID_ARGUMENT, "NULL rank output accepted");
  CHECK(contains(sy_context_last_error(ctx), "rank"), "message: %s", sy_context_last_error(ctx));
  CHECK(sy_context_topology(ctx, &node, NULL, &local, &local_size) == SY_INVALID_ARGUMENT,
        "NULL topology output accepted");
  CHECK(sy_context_rank(NULL, &r) == SY_INVALID_ARGUMENT, "NULL context accepted");
  return ctx;
}

static sy_layer_config_t two_expert_config(void) {
  sy_layer_config_t c = SY_LAYER_CONFIG_INIT;
  c.hidden = H;
  c.num_experts = E;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = I;
  return c;
}

static void test_layer_creation_errors(sy_context_t ctx) {
  sy_layer_t layer = NULL;
  sy_layer_config_t c = two_expert_config();
  CHECK(sy_layer_create(ctx, NULL, &layer) == SY_INVALID_ARGUMENT, "NULL config accepted");
  CHECK(contains(sy_context_last_error(ctx), "SY_LAYER_CONFIG_INIT"), "message: %s",
        sy_context_last_error(ctx));
  c.size = sizeof(c) - 4; /* no released version's size (sizeof(c) - 8 is 0.2's: test_compat_api) */
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT && layer == NULL,
        "wrong config size accepted");
  c = two_expert_config();
  c.top_k = 3;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "top_k > num_experts accepted");
  CHECK(contains(sy_context_last_error(ctx), "top_k"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.scoring = (sy_score_func_t)7;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "bad scoring accepted");
  CHECK(contains(sy_context_last_error(ctx), "scoring"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.n_group = 3;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "n_group 3 of 2 accepted");
  CHECK(contains(sy_context_last_error(ctx), "n_group"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.overlap = (sy_overlap_mode_t)9;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "bad overlap mode accepted");
  CHECK(contains(sy_context_last_error(ctx), "overlap"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.wire = (sy_wire_precision_t)4;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "bad wire precision accepted");
  CHECK(contains(sy_context_last_error(ctx), "wire"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.backend = (sy_backend_t)7;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "bad backend accepted");
  CHECK(contains(sy_context_last_error(ctx), "backend"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.compute = (sy_compute_precision_t)3;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "bad compute accepted");
  CHECK(contains(sy_context_last_error(ctx), "compute"), "message: %s", sy_context_last_error(ctx));
  c = two_expert_config();
  c.backend = SY_BACKEND_OPENBLAS;
  c.compute = SY_COMPUTE_BF16; /* bf16 compute is onednn's */
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "bf16 openblas accepted");
  CHECK(contains(sy_context_last_error(ctx), "onednn"), "message: %s", sy_context_last_error(ctx));
  /* This program initialises MPI with MPI_Init (a single thread): no communication thread. */
  c = two_expert_config();
  c.overlap = SY_OVERLAP_ON;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_UNSUPPORTED && layer == NULL,
        "overlap on accepted without MPI_THREAD_SERIALIZED");
  CHECK(contains(sy_context_last_error(ctx), "MPI_Init_thread"), "message: %s",
        sy_context_last_error(ctx));
  c.overlap = SY_OVERLAP_AUTO;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "overlap auto refused: %s",
        sy_context_last_error(ctx));
  sy_layer_destroy(layer);
  layer = NULL;
}

/* Sets every tensor this rank may set from weight(); returns the number of experts held. */
static int set_all_params(sy_layer_t layer) {
  float buf[64];
  fill(buf, 0, E * H);
  CHECK(sy_layer_set_param(layer, "gate.weight", buf, E * H) == SY_OK, "%s",
        sy_layer_last_error(layer));
  const char* proj[3] = {"gate_proj", "up_proj", "down_proj"};
  for (int p = 0; p < 3; ++p) {
    char name[64];
    snprintf(name, sizeof name, "shared_experts.%s.weight", proj[p]);
    fill(buf, 1 + p, I * H);
    CHECK(sy_layer_set_param(layer, name, buf, I * H) == SY_OK, "%s", sy_layer_last_error(layer));
  }
  int ids[E], held = -1;
  CHECK(sy_layer_local_experts(layer, ids, E, &held) == SY_OK, "local experts");
  for (int i = 0; i < held; ++i) {
    for (int p = 0; p < 3; ++p) {
      char name[64];
      snprintf(name, sizeof name, "experts.%d.%s.weight", ids[i], proj[p]);
      fill(buf, 10 + 3 * ids[i] + p, I * H);
      CHECK(sy_layer_set_param(layer, name, buf, I * H) == SY_OK, "%s", sy_layer_last_error(layer));
    }
  }
  return held;
}

static void test_params(sy_layer_t layer, int size) {
  int held = -1, ids[E] = {-1, -1};
  CHECK(sy_layer_local_experts(layer, NULL, 0, &held) == SY_OK, "count only");
  CHECK(held == (size == 1 ? 2 : (rank < 2 ? 1 : 0)), "rank %d holds %d experts", rank, held);
  CHECK(sy_layer_local_experts(layer, ids, E, &held) == SY_OK, "ids");
  if (size > 1 && rank < 2) CHECK(ids[0] == rank, "rank %d holds expert %d", rank, ids[0]);

  float gate[E * H], before[E * H];
  CHECK(sy_layer_get_param(layer, "gate.weight", before, E * H) == SY_OK, "get gate");
  fill(gate, 99, E * H);
  CHECK(sy_layer_set_param(layer, "gate.weight", gate, E * H - 1) == SY_INVALID_ARGUMENT,
        "wrong count accepted");
  CHECK(contains(sy_layer_last_error(layer), "count"), "message: %s", sy_layer_last_error(layer));
  CHECK(sy_layer_get_param(layer, "gate.weight", gate, E * H) == SY_OK &&
            memcmp(gate, before, sizeof gate) == 0,
        "a rejected set changed the parameter");
  CHECK(sy_layer_set_param(layer, "gate.wieght", gate, E * H) == SY_INVALID_ARGUMENT,
        "unknown name accepted");
  CHECK(contains(sy_layer_last_error(layer), "gate.wieght"), "message: %s",
        sy_layer_last_error(layer));
  CHECK(sy_layer_set_param(layer, "experts.7.up_proj.weight", gate, I * H) == SY_INVALID_ARGUMENT,
        "expert out of range accepted");
  CHECK(sy_layer_set_param(layer, "experts.0.side_proj.weight", gate, I * H) ==
            SY_INVALID_ARGUMENT || held == 0 || ids[0] != 0,
        "unknown projection accepted");
  if (size > 1) {
    const int other = rank == 0 ? 1 : 0;
    char name[64];
    snprintf(name, sizeof name, "experts.%d.up_proj.weight", other);
    CHECK(sy_layer_set_param(layer, name, gate, I * H) == SY_INVALID_ARGUMENT,
          "another rank's expert accepted");
    CHECK(contains(sy_layer_last_error(layer), "held by rank"), "message: %s",
          sy_layer_last_error(layer));
  }
  float bias[E] = {0.5f, -0.5f}, bias_back[E];
  CHECK(sy_layer_set_param(layer, "gate.e_score_correction_bias", bias, E) == SY_OK, "set bias");
  CHECK(sy_layer_get_param(layer, "gate.e_score_correction_bias", bias_back, E) == SY_OK &&
            bias_back[0] == 0.5f && bias_back[1] == -0.5f,
        "bias round trip");
  CHECK(sy_layer_get_grad(layer, "gate.e_score_correction_bias", bias_back, E) ==
            SY_INVALID_ARGUMENT,
        "bias gradient accepted");
  CHECK(sy_layer_set_param(layer, "gate.weight", NULL, E * H) == SY_INVALID_ARGUMENT,
        "NULL data accepted");
  CHECK(sy_layer_set_param(NULL, "gate.weight", gate, E * H) == SY_INVALID_ARGUMENT,
        "NULL layer accepted");
}

/* With 2 experts and top-2 softmax routing every token uses both experts with their scores as
 * weights, so y = s0 e0(x) + s1 e1(x) + shared(x) can be computed directly. */
static void test_forward_backward(sy_context_t ctx, sy_layer_t layer, int size) {
  set_all_params(layer);
  const int64_t tokens = rank == 1 ? 0 : 3 + rank; /* rank 1 holds no token */
  float x[8 * H], y[8 * H], y_again[8 * H], grad_x[8 * H];
  for (int i = 0; i < tokens * H; ++i) x[i] = cosf(0.9f * (float)i + (float)rank);
  sy_saved_t saved = NULL;
  sy_aux_losses_t aux;

  CHECK(sy_layer_forward(layer, x, tokens, H + 1, y, &saved, &aux) == SY_INVALID_ARGUMENT,
        "hidden mismatch accepted");
  CHECK(contains(sy_layer_last_error(layer), "hidden"), "message: %s", sy_layer_last_error(layer));
  CHECK(sy_layer_forward(layer, NULL, 2, H, y, &saved, &aux) == SY_INVALID_ARGUMENT,
        "NULL x accepted");
  CHECK(sy_layer_forward(layer, x, tokens, H, y, NULL, &aux) == SY_INVALID_ARGUMENT,
        "NULL saved accepted");

  CHECK(sy_layer_forward(layer, x, tokens, H, y, &saved, &aux) == SY_OK, "%s",
        sy_layer_last_error(layer));
  double err = 0, norm = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    double logits[E], s[E], out[H], sum = 0, want[H] = {0};
    for (int e = 0; e < E; ++e) {
      logits[e] = 0;
      for (int h = 0; h < H; ++h) logits[e] += weight(0, e * H + h) * x[t * H + h];
    }
    for (int e = 0; e < E; ++e) sum += exp(logits[e]);
    for (int e = 0; e < E; ++e) s[e] = exp(logits[e]) / sum;
    for (int e = 0; e < E; ++e) {
      ffn(10 + 3 * e, I, &x[t * H], out);
      for (int h = 0; h < H; ++h) want[h] += s[e] * out[h];
    }
    ffn(1, I, &x[t * H], out);
    for (int h = 0; h < H; ++h) {
      want[h] += out[h];
      err += (y[t * H + h] - want[h]) * (y[t * H + h] - want[h]);
      norm += want[h] * want[h];
    }
  }
  CHECK(tokens == 0 || sqrt(err / norm) < 1e-5, "forward relative error %.3e", sqrt(err / norm));

  /* Backward of sum(y): the shared down_proj gradient is sum_t act_t, computable directly. */
  float ones[8 * H];
  for (int i = 0; i < 8 * H; ++i) ones[i] = 1.0f;
  CHECK(sy_layer_zero_grads(layer) == SY_OK, "zero grads");
  CHECK(sy_layer_backward(layer, saved, ones, grad_x) == SY_OK, "%s", sy_layer_last_error(layer));
  float grad_down[H * I];
  CHECK(sy_layer_get_grad(layer, "shared_experts.down_proj.weight", grad_down, H * I) == SY_OK,
        "get grad");
  double act_sum[I] = {0};
  for (int64_t t = 0; t < tokens; ++t) {
    for (int i = 0; i < I; ++i) {
      double g = 0, u = 0;
      for (int h = 0; h < H; ++h) {
        g += weight(1, i * H + h) * x[t * H + h];
        u += weight(2, i * H + h) * x[t * H + h];
      }
      act_sum[i] += silu(g) * u;
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, act_sum, I, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  double gerr = 0, gnorm = 0;
  for (int h = 0; h < H; ++h) {
    for (int i = 0; i < I; ++i) {
      gerr += (grad_down[h * I + i] - act_sum[i]) * (grad_down[h * I + i] - act_sum[i]);
      gnorm += act_sum[i] * act_sum[i];
    }
  }
  CHECK(sqrt(gerr / gnorm) < 1e-5, "shared down_proj gradient relative error %.3e",
        sqrt(gerr / gnorm));

  /* A failed call leaves the layer usable: the same forward gives the same output. */
  sy_saved_t again = NULL;
  CHECK(sy_layer_forward(layer, x, tokens, H + 2, y_again, &again, NULL) == SY_INVALID_ARGUMENT,
        "hidden mismatch accepted");
  CHECK(sy_layer_forward(layer, x, tokens, H, y_again, &again, NULL) == SY_OK, "%s",
        sy_layer_last_error(layer));
  CHECK(memcmp(y, y_again, sizeof(float) * (size_t)(tokens * H)) == 0,
        "output changed after a failed call");

  double load[E];
  CHECK(sy_layer_expert_load(layer, load, E) == SY_OK, "expert load");
  int64_t global_tokens = tokens;
  MPI_Allreduce(MPI_IN_PLACE, &global_tokens, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  CHECK(load[0] == (double)global_tokens && load[1] == (double)global_tokens, "loads %g %g",
        load[0], load[1]);
  CHECK(sy_layer_expert_load(layer, load, E + 1) == SY_INVALID_ARGUMENT, "wrong E accepted");
  CHECK(sy_layer_update_selection_bias(layer) == SY_OK, "bias update");

  /* saved state belongs to the layer that made it */
  sy_layer_t other = NULL;
  sy_layer_config_t c = two_expert_config();
  c.num_shared = 0;
  CHECK(sy_layer_create(ctx, &c, &other) == SY_OK, "%s", sy_context_last_error(ctx));
  float unused[H];
  CHECK(sy_layer_get_param(other, "shared_experts.up_proj.weight", unused, H) ==
            SY_INVALID_ARGUMENT,
        "shared experts of a layer without them");
  CHECK(sy_layer_backward(other, again, ones, grad_x) == SY_INVALID_ARGUMENT,
        "saved state of another layer accepted");
  CHECK(sy_layer_backward(layer, NULL, ones, grad_x) == SY_INVALID_ARGUMENT, "NULL saved");
  CHECK(sy_layer_destroy(other) == SY_OK, "destroy");
  sy_saved_destroy(saved);
  sy_saved_destroy(again);
  (void)size;
}

/* Moving every expert to the next rank (slot layout of moe-placement/v1) carries its weights along,
 * and a malformed placement is refused without changing anything. */
static void test_apply_placement(sy_layer_t layer, int size) {
  int phy2log[2 * 8], slots = 0;
  for (int r = 0; r < size; ++r) {
    for (int s = 0; s < 2; ++s) phy2log[slots++] = (r + 1 + s) % E; /* 2 slots per rank */
  }
  int before = -1;
  sy_layer_local_experts(layer, NULL, 0, &before);
  const int bad[2] = {0, 0};
  CHECK(sy_layer_apply_placement(layer, bad, size == 1 ? 2 : 1) == SY_INVALID_ARGUMENT,
        "a placement missing expert 1 accepted");
  CHECK(sy_layer_apply_placement(layer, NULL, 4) == SY_INVALID_ARGUMENT, "NULL placement");
  int held_now = -1;
  sy_layer_local_experts(layer, NULL, 0, &held_now);
  CHECK(held_now == before, "a refused placement changed the experts held");
  CHECK(sy_layer_apply_placement(layer, phy2log, slots) == SY_OK, "%s", sy_layer_last_error(layer));
  int ids[E], held = -1;
  CHECK(sy_layer_local_experts(layer, ids, E, &held) == SY_OK && held == E, "held %d", held);
  for (int i = 0; i < held; ++i) {
    float got[I * H], want[I * H];
    char name[64];
    snprintf(name, sizeof name, "experts.%d.up_proj.weight", ids[i]);
    fill(want, 10 + 3 * ids[i] + 1, I * H);
    CHECK(sy_layer_get_param(layer, name, got, I * H) == SY_OK && memcmp(got, want, sizeof got) == 0,
          "expert %d's weights did not arrive intact", ids[i]);
  }
}

static void test_abort(sy_context_t ctx, sy_layer_t layer) {
  CHECK(sy_context_abort(ctx) == SY_OK, "abort");
  float x[H] = {0}, y[H];
  sy_saved_t saved = NULL;
  CHECK(sy_layer_forward(layer, x, 1, H, y, &saved, NULL) == SY_ABORTED, "forward after abort");
  CHECK(contains(sy_layer_last_error(layer), "aborted"), "message: %s", sy_layer_last_error(layer));
  int r;
  CHECK(sy_context_rank(ctx, &r) == SY_ABORTED, "rank after abort");
  CHECK(sy_layer_destroy(layer) == SY_OK && sy_context_destroy(ctx) == SY_OK, "destroy");
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  test_status_and_version();
  sy_context_t ctx = test_context();
  test_layer_creation_errors(ctx);
  sy_layer_config_t c = two_expert_config();
  sy_layer_t layer = NULL;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "%s", sy_context_last_error(ctx));
  test_params(layer, size);
  test_forward_backward(ctx, layer, size);
  test_apply_placement(layer, size);
  test_abort(ctx, layer);

  int counts[2] = {passed, failed};
  MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%d passed, %d failed\n", counts[0], counts[1]);
  MPI_Finalize();
  return counts[1] == 0 ? 0 : 1;
}
