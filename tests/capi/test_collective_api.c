/* Ranks that disagree, or one rank whose call is wrong, through the C API: every rank of the call
 * gets the same error naming the rank and the cause, no rank is left a call ahead (the next
 * agreed call works on every rank), and a second backward of one forward is refused everywhere.
 * Runs under mpirun on 1-3 ranks; prints "N passed, M failed". */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "switchyard.h"
#include "check.h"

#define H 8
#define E 4
#define TOKENS 3

static int contains(const char* haystack, const char* needle) {
  return haystack != NULL && strstr(haystack, needle) != NULL;
}

static sy_layer_config_t config(void) {
  sy_layer_config_t c = SY_LAYER_CONFIG_INIT;
  c.hidden = H;
  c.num_experts = E;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = 6;
  return c;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int last = size - 1;
  char needle[64];

  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  sy_context_t ctx = NULL;
  CHECK(sy_context_create_mpi(MPI_Comm_c2f(MPI_COMM_WORLD), &params, &ctx) == SY_OK, "context: %s",
        sy_context_last_error(NULL));

  /* A different hidden size on the last rank: every rank refuses, naming the field (with one
   * rank there is nothing to disagree with). */
  sy_layer_config_t c = config();
  if (rank == last) c.hidden = 2 * H;
  sy_layer_t layer = NULL;
  sy_status_t s = sy_layer_create(ctx, &c, &layer);
  if (size > 1) {
    CHECK(s == SY_INVALID_ARGUMENT && layer == NULL, "disagreeing hidden accepted (status %d)", s);
    CHECK(contains(sy_context_last_error(ctx), "MoeConfig.hidden"), "message: %s",
          sy_context_last_error(ctx));
  } else {
    CHECK(s == SY_OK, "create: %s", sy_context_last_error(ctx));
    sy_layer_destroy(layer);
  }
  /* An invalid enum on one rank only: its check fails and every rank hears which. */
  c = config();
  if (rank == last) c.scoring = (sy_score_func_t)7;
  layer = NULL;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_INVALID_ARGUMENT && layer == NULL,
        "invalid scoring on rank %d accepted", last);
  snprintf(needle, sizeof needle, "rank %d: sy_layer_config_t.scoring", last);
  CHECK(contains(sy_context_last_error(ctx), needle), "message: %s", sy_context_last_error(ctx));

  c = config();
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "create: %s", sy_context_last_error(ctx));

  float x[TOKENS * H], y[TOKENS * H], gy[TOKENS * H], gx[TOKENS * H];
  for (int i = 0; i < TOKENS * H; ++i) {
    x[i] = 0.1f * (float)((i * 7 + rank) % 11) - 0.5f;
    gy[i] = 0.05f * (float)((i * 3 + rank) % 5);
  }
  /* A negative token count on the last rank fails the forward on every rank. */
  sy_saved_t saved = NULL;
  s = sy_layer_forward(layer, x, rank == last ? -1 : TOKENS, H, y, &saved, NULL);
  CHECK(s == SY_INVALID_ARGUMENT && saved == NULL, "forward with -1 tokens on rank %d: status %d",
        last, s);
  snprintf(needle, sizeof needle, "rank %d: forward: token count", last);
  CHECK(contains(sy_layer_last_error(layer), needle), "message: %s", sy_layer_last_error(layer));

  /* Nobody is a call ahead: the agreed forward and backward work, and a second backward of the
   * same forward is refused on every rank when one rank repeats it... */
  CHECK(sy_layer_forward(layer, x, TOKENS, H, y, &saved, NULL) == SY_OK, "forward: %s",
        sy_layer_last_error(layer));
  CHECK(sy_layer_backward(layer, saved, gy, gx) == SY_OK, "backward: %s",
        sy_layer_last_error(layer));
  sy_saved_t fresh = NULL;
  CHECK(sy_layer_forward(layer, x, TOKENS, H, y, &fresh, NULL) == SY_OK, "forward: %s",
        sy_layer_last_error(layer));
  s = sy_layer_backward(layer, rank == last ? saved : fresh, gy, gx);
  CHECK(s == SY_INVALID_ARGUMENT, "a second backward of one forward on rank %d: status %d", last,
        s);
  snprintf(needle, sizeof needle, "rank %d: sy_layer_backward: this forward's backward", last);
  CHECK(contains(sy_layer_last_error(layer), needle), "message: %s", sy_layer_last_error(layer));
  /* ...and the refused call left `fresh` usable everywhere. */
  CHECK(sy_layer_backward(layer, fresh, gy, gx) == SY_OK, "backward: %s",
        sy_layer_last_error(layer));

  /* A placement only the last rank wants (the first experts of devices 0 and 1 swapped) moves
   * nothing anywhere. */
  if (size > 1) {
    int before[E], count = 0, after[E], count_after = 0;
    sy_layer_local_experts(layer, before, E, &count);
    const int per_device = (E + size - 1) / size, slots = per_device * size;
    int phy2log[E * 4];
    for (int j = 0; j < slots; ++j) phy2log[j] = j % E;
    if (rank == last) {
      phy2log[0] = phy2log[per_device];
      phy2log[per_device] = 0;
    }
    s = sy_layer_apply_placement(layer, phy2log, slots);
    CHECK(s == SY_INVALID_ARGUMENT, "disagreeing placements accepted (status %d)", s);
    CHECK(contains(sy_layer_last_error(layer), "placement: devices of expert"), "message: %s",
          sy_layer_last_error(layer));
    sy_layer_local_experts(layer, after, E, &count_after);
    CHECK(count == count_after && memcmp(before, after, sizeof(int) * (size_t)count) == 0,
          "a refused placement moved experts");
  }
  sy_saved_t again = NULL;
  CHECK(sy_layer_forward(layer, x, TOKENS, H, y, &again, NULL) == SY_OK,
        "forward after the refusals: %s", sy_layer_last_error(layer));
  sy_saved_destroy(saved);
  sy_saved_destroy(fresh);
  sy_saved_destroy(again);
  sy_layer_destroy(layer);
  sy_context_destroy(ctx);
  int totals[2] = {passed, failed};
  MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%d passed, %d failed\n", totals[0], totals[1]);
  MPI_Finalize();
  return totals[1] == 0 ? 0 : 1;
}
