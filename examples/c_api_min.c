/* The smallest complete use of the C API: a DeepSeekMoE layer forward and backward on every rank
 * of MPI_COMM_WORLD. Run: mpirun -np 2 build/release/examples/c_api_min */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "switchyard.h"

#define CHECK(call)                                                                   \
  do {                                                                                \
    sy_status_t s_ = (call);                                                          \
    if (s_ != SY_OK) {                                                                \
      fprintf(stderr, "%s failed: %s\n", #call, sy_status_string(s_));                \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                   \
    }                                                                                 \
  } while (0)

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  sy_context_t ctx;
  if (sy_context_create_mpi(MPI_Comm_c2f(MPI_COMM_WORLD), &params, &ctx) != SY_OK) {
    fprintf(stderr, "context: %s\n", sy_context_last_error(NULL));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int rank, size;
  CHECK(sy_context_rank(ctx, &rank));
  CHECK(sy_context_size(ctx, &size));

  sy_layer_config_t config = SY_LAYER_CONFIG_INIT;
  config.hidden = 32;
  config.num_experts = 8;
  config.num_shared = 1;
  config.top_k = 2;
  config.intermediate = 16;
  sy_layer_t layer;
  if (sy_layer_create(ctx, &config, &layer) != SY_OK) {
    fprintf(stderr, "layer: %s\n", sy_context_last_error(ctx));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  /* Set every parameter this rank holds (small deterministic values standing in for a checkpoint). */
  const int64_t H = config.hidden, I = config.intermediate;
  float* buf = malloc(sizeof(float) * (size_t)(H * I * 4));
  for (int64_t i = 0; i < H * I * 4; ++i) buf[i] = 0.05f * sinf(0.37f * (float)i);
  CHECK(sy_layer_set_param(layer, "gate.weight", buf, (size_t)(config.num_experts * H)));
  CHECK(sy_layer_set_param(layer, "shared_experts.gate_proj.weight", buf, (size_t)(I * H)));
  CHECK(sy_layer_set_param(layer, "shared_experts.up_proj.weight", buf + 1, (size_t)(I * H)));
  CHECK(sy_layer_set_param(layer, "shared_experts.down_proj.weight", buf + 2, (size_t)(H * I)));
  int ids[64], held = 0;
  CHECK(sy_layer_local_experts(layer, ids, 64, &held));
  for (int i = 0; i < held; ++i) {
    char name[64];
    const char* proj[3] = {"gate_proj", "up_proj", "down_proj"};
    for (int p = 0; p < 3; ++p) {
      snprintf(name, sizeof name, "experts.%d.%s.weight", ids[i], proj[p]);
      CHECK(sy_layer_set_param(layer, name, buf + ids[i] + p, (size_t)(I * H)));
    }
  }

  /* Ranks may hold different numbers of tokens. */
  const int64_t tokens = 4 + rank;
  float* x = malloc(sizeof(float) * (size_t)(tokens * H));
  float* y = malloc(sizeof(float) * (size_t)(tokens * H));
  float* grad_x = malloc(sizeof(float) * (size_t)(tokens * H));
  for (int64_t i = 0; i < tokens * H; ++i) x[i] = cosf(0.11f * (float)i + (float)rank);

  sy_saved_t saved;
  sy_aux_losses_t aux;
  CHECK(sy_layer_forward(layer, x, tokens, H, y, &saved, &aux));
  CHECK(sy_layer_backward(layer, saved, y /* grad of 0.5*|y|^2 */, grad_x));
  CHECK(sy_saved_destroy(saved));

  double y_sq = 0, g_sq = 0;
  for (int64_t i = 0; i < tokens * H; ++i) y_sq += (double)y[i] * y[i];
  for (int64_t i = 0; i < tokens * H; ++i) g_sq += (double)grad_x[i] * grad_x[i];
  float gate_grad[8 * 32];
  CHECK(sy_layer_get_grad(layer, "gate.weight", gate_grad, (size_t)(config.num_experts * H)));
  printf("rank %d/%d: %lld tokens, %d experts held, |y| %.6f |grad_x| %.6f gate.weight grad[0] "
         "%.3e, expert balance loss %.4f\n",
         rank, size, (long long)tokens, held, sqrt(y_sq), sqrt(g_sq), gate_grad[0],
         aux.expert_balance);

  free(x);
  free(y);
  free(grad_x);
  free(buf);
  sy_layer_destroy(layer);
  sy_context_destroy(ctx);
  MPI_Finalize();
  return 0;
}
