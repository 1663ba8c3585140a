/* sy_context_create_store without MPI, one process: argument checks, the message for a missing
 * secret, and a one-rank context that runs a forward. The two-process parity run is
 * tests/python/store_launch.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard.h"

static int failures = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

int main(void) {
  sy_context_t ctx = NULL;
  CHECK(sy_context_create_store(NULL, &ctx) == SY_INVALID_ARGUMENT);

  sy_store_params_t params = SY_STORE_PARAMS_INIT;
  params.size = sizeof(params) - 1;
  CHECK(sy_context_create_store(&params, &ctx) == SY_INVALID_ARGUMENT);
  CHECK(strstr(sy_context_last_error(NULL), "SY_STORE_PARAMS_INIT") != NULL);

  sy_store_params_t missing = SY_STORE_PARAMS_INIT;
  missing.master_addr = "127.0.0.1";
  missing.master_port = 0;
  missing.rank = 0;
  missing.world_size = 1;
  unsetenv("SWITCHYARD_JOB_SECRET");
  CHECK(sy_context_create_store(&missing, &ctx) == SY_INVALID_ARGUMENT);
  CHECK(strstr(sy_context_last_error(NULL), "SWITCHYARD_JOB_SECRET") != NULL);
  CHECK(ctx == NULL);

  sy_store_params_t one = missing;
  one.secret = "capi-test-secret";
  one.timeout_ms = 10000;
  CHECK(sy_context_create_store(&one, &ctx) == SY_OK);
  if (ctx == NULL) {
    fprintf(stderr, "create_store: %s\n", sy_context_last_error(NULL));
    return 1;
  }
  int rank = -1, size = -1;
  CHECK(sy_context_rank(ctx, &rank) == SY_OK && rank == 0);
  CHECK(sy_context_size(ctx, &size) == SY_OK && size == 1);

  sy_layer_config_t config = SY_LAYER_CONFIG_INIT;
  config.hidden = 4;
  config.num_experts = 4;
  config.top_k = 2;
  config.intermediate = 4;
  config.num_shared = 1;
  sy_layer_t layer = NULL;
  CHECK(sy_layer_create(ctx, &config, &layer) == SY_OK);
  float x[8] = {1, 2, 3, 4, -1, -2, -3, -4}, y[8];
  sy_saved_t saved = NULL;
  CHECK(sy_layer_forward(layer, x, 2, 4, y, &saved, NULL) == SY_OK);
  float grad_x[8];
  CHECK(sy_layer_backward(layer, saved, x, grad_x) == SY_OK);
  sy_saved_destroy(saved);
  sy_layer_destroy(layer);
  CHECK(sy_context_destroy(ctx) == SY_OK);

  if (failures == 0) printf("test_store_api: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
