/* Structs from older headers, and sy_context_abort from another thread. A sy_layer_config_t of
 * version 0.2 (it ended with `wire`) is accepted with the later fields at their defaults, whatever
 * bytes follow it; sizes of no released version are refused. On 2 ranks, rank 0's forward waits
 * for rank 1, which is late: a watchdog thread's sy_context_abort ends that wait with SY_ABORTED
 * long before the timeout, and rank 1 then times out naming rank 0. Prints "N passed, M failed". */
#include <mpi.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "switchyard.h"
#include "check.h"

#define H 8
#define TOKENS 4

static int contains(const char* haystack, const char* needle) {
  return haystack != NULL && strstr(haystack, needle) != NULL;
}

static void sleep_seconds(double s) {
  struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&t, NULL);
}

static sy_layer_config_t config(void) {
  sy_layer_config_t c = SY_LAYER_CONFIG_INIT;
  c.hidden = H;
  c.num_experts = 4;
  c.top_k = 2;
  c.intermediate = 6;
  return c;
}

static void test_older_structs(sy_context_t ctx) {
  /* What a caller compiled against the 0.2 header passes: its struct is shorter, and whatever
   * lies beyond it in memory must not be read as the fields it lacks. */
  const size_t fields = offsetof(sy_layer_config_t, backend);
  const size_t align = _Alignof(sy_layer_config_t);
  sy_layer_config_t c = config();
  c.size = (fields + align - 1) / align * align;
  c.backend = (sy_backend_t)99;
  c.compute = (sy_compute_precision_t)99;
  sy_layer_t layer = NULL;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "a 0.2 sy_layer_config_t (size %zu): %s",
        c.size, sy_context_last_error(ctx));
  sy_layer_destroy(layer);
  c = config();
  c.size = sizeof(sy_layer_config_t) + 8;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "a newer, larger struct accepted");
  CHECK(contains(sy_context_last_error(ctx), "no version"), "message: %s",
        sy_context_last_error(ctx));
  c.size = 8;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT, "size 8 accepted");
}

static void* abort_later(void* context) {
  sleep_seconds(0.3);
  sy_context_abort((sy_context_t)context);
  return NULL;
}

static void test_abort_from_another_thread(void) {
  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  params.timeout_ms = 4000;
  sy_context_t ctx = NULL;
  CHECK(sy_context_create_mpi(MPI_Comm_c2f(MPI_COMM_WORLD), &params, &ctx) == SY_OK, "context");
  sy_layer_config_t c = config();
  sy_layer_t layer = NULL;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "create: %s", sy_context_last_error(ctx));
  float x[TOKENS * H], y[TOKENS * H];
  for (int i = 0; i < TOKENS * H; ++i) x[i] = 0.01f * (float)i;
  sy_saved_t saved = NULL;
  if (rank == 0) {
    pthread_t watchdog;
    pthread_create(&watchdog, NULL, abort_later, ctx);
    /* SY_ABORTED, not SY_TIMEOUT: the abort ended the wait, not the 4 s bound. */
    const sy_status_t s = sy_layer_forward(layer, x, TOKENS, H, y, &saved, NULL);
    pthread_join(watchdog, NULL);
    CHECK(s == SY_ABORTED, "a forward waiting on a late peer was not aborted (status %d: %s)", s,
          sy_layer_last_error(layer));
  } else if (rank == 1) {
    sleep_seconds(1.0);
    const sy_status_t s = sy_layer_forward(layer, x, TOKENS, H, y, &saved, NULL);
    CHECK(s == SY_TIMEOUT || s == SY_PEER_FAILURE, "rank 1: status %d", s);
    CHECK(contains(sy_layer_last_error(layer), "rank(s) 0"), "rank 1: message: %s",
          sy_layer_last_error(layer));
  }
  sy_saved_destroy(saved);
  sy_layer_destroy(layer);
  sy_context_destroy(ctx);
}

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  sy_context_t ctx = NULL;
  CHECK(sy_context_create_mpi(MPI_Comm_c2f(MPI_COMM_WORLD), &params, &ctx) == SY_OK, "context");
  test_older_structs(ctx);
  sy_context_destroy(ctx);
  if (size == 2) test_abort_from_another_thread();
  int totals[2] = {passed, failed};
  MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%d passed, %d failed\n", totals[0], totals[1]);
  MPI_Finalize();
  return totals[1] == 0 ? 0 : 1;
}
