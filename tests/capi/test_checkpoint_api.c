/* sy_layer_save / sy_layer_load: a layer saved with one placement (replicas included) loads by
 * global expert id into a layer on another placement, keeping it or adopting the saved one, also
 * into bound memory; a missing, truncated or foreign checkpoint fails the call on every rank with
 * the failing rank and file, and changes nothing. Runs under mpirun on 1, 2 and 3 ranks. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "switchyard.h"
#include "check.h"

#define H 6
#define I 4
#define E 6
#define N (I * H)

static const char* const kProj[3] = {"gate_proj", "up_proj", "down_proj"};
static int world = 1;

/* Every value a function of (seed, tensor, element): expert tensors keyed by global id. */
static float value(int seed, int tensor, int i) {
  return (float)seed + 0.01f * (float)tensor + 1e-4f * (float)i;
}

static sy_layer_t make_layer(sy_context_t ctx, int hidden) {
  sy_layer_config_t c = SY_LAYER_CONFIG_INIT;
  c.hidden = hidden;
  c.num_experts = E;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = I;
  c.selection_bias = 1;
  sy_layer_t layer = NULL;
  CHECK(sy_layer_create(ctx, &c, &layer) == SY_OK, "%s", sy_context_last_error(ctx));
  return layer;
}

static int local_experts(sy_layer_t layer, int* ids) {
  int count = 0;
  sy_layer_local_experts(layer, ids, E, &count);
  return count;
}

/* Sets (or, with check, compares against) every tensor the layer has on this rank. Returns the
 * number of mismatches. */
static int visit(sy_layer_t layer, int seed, int check) {
  char name[64];
  float buf[E * H > N ? E * H : N];
  int bad = 0;
  for (int t = 0; t < 4 + 3 * E + 1; ++t) {
    size_t count = N;
    if (t == 0) {
      snprintf(name, sizeof name, "gate.weight");
      count = E * H;
    } else if (t < 4) {
      snprintf(name, sizeof name, "shared_experts.%s.weight", kProj[t - 1]);
    } else if (t < 4 + 3 * E) {
      const int e = (t - 4) / 3;
      int ids[E], held = local_experts(layer, ids), have = 0;
      for (int k = 0; k < held; ++k) have |= ids[k] == e;
      if (!have) continue;
      snprintf(name, sizeof name, "experts.%d.%s.weight", e, kProj[(t - 4) % 3]);
    } else {
      snprintf(name, sizeof name, "gate.e_score_correction_bias");
      count = E;
    }
    if (check) {
      CHECK(sy_layer_get_param(layer, name, buf, count) == SY_OK, "%s", sy_layer_last_error(layer));
      for (size_t i = 0; i < count; ++i) bad += buf[i] != value(seed, t, (int)i);
    } else {
      for (size_t i = 0; i < count; ++i) buf[i] = value(seed, t, (int)i);
      CHECK(sy_layer_set_param(layer, name, buf, count) == SY_OK, "%s", sy_layer_last_error(layer));
    }
  }
  return bad;
}

/* Expert e on rank (e + shift) % world, experts 0 and 1 also on every other rank. */
static void apply_rotated(sy_layer_t layer, int shift) {
  /* moe-placement/v1 rows: slots per rank equal; pad with replicas of experts 0 and 1. */
  int slots_per_rank = (E + world - 1) / world + (world > 1 ? 2 : 0);
  int* row = calloc((size_t)(slots_per_rank * world), sizeof(int));
  for (int r = 0; r < world; ++r) {
    int n = 0, used[E] = {0};
    for (int e = 0; e < E; ++e) {
      if ((e + shift) % world == r) {
        row[r * slots_per_rank + n++] = e;
        used[e] = 1;
      }
    }
    for (int e = 0; n < slots_per_rank; e = (e + 1) % E) {
      if (!used[e]) {
        row[r * slots_per_rank + n++] = e;
        used[e] = 1;
      }
    }
  }
  CHECK(sy_layer_apply_placement(layer, row, slots_per_rank * world) == SY_OK, "%s",
        sy_layer_last_error(layer));
  free(row);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  sy_context_params_t params = SY_CONTEXT_PARAMS_INIT;
  params.timeout_ms = 30000;
  sy_context_t ctx = NULL;
  CHECK(sy_context_create_mpi(MPI_Comm_c2f(MPI_COMM_WORLD), &params, &ctx) == SY_OK, "%s",
        sy_context_last_error(NULL));
  char dir[256] = "";
  if (rank == 0) {
    snprintf(dir, sizeof dir, "/tmp/sy-capi-ckpt-XXXXXX");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  }
  MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);

  /* Saved with replicas (experts 0 and 1 everywhere), rotated by one rank. */
  sy_layer_t saved = make_layer(ctx, H);
  apply_rotated(saved, 1);
  visit(saved, 3, 0);
  CHECK(sy_layer_save(saved, dir, 7) == SY_OK, "%s", sy_layer_last_error(saved));

  /* Keep the loading layer's own (contiguous) placement: its experts come by global id. */
  sy_layer_t loaded = make_layer(ctx, H);
  visit(loaded, 5, 0);
  int64_t step = -1;
  CHECK(sy_layer_load(loaded, dir, 1, &step) == SY_OK, "%s", sy_layer_last_error(loaded));
  CHECK(step == 7, "step %lld", (long long)step);
  CHECK(visit(loaded, 3, 1) == 0, "values after a load keeping the placement");
  int ids_saved[E], ids_loaded[E];
  const int held_saved = local_experts(saved, ids_saved);

  /* Adopt the saved placement. */
  sy_layer_t adopted = make_layer(ctx, H);
  CHECK(sy_layer_load(adopted, dir, 0, NULL) == SY_OK, "%s", sy_layer_last_error(adopted));
  const int held_adopted = local_experts(adopted, ids_loaded);
  CHECK(held_adopted == held_saved && memcmp(ids_saved, ids_loaded, sizeof(int) * held_saved) == 0,
        "the saved placement was not adopted");
  CHECK(visit(adopted, 3, 1) == 0, "values after a load adopting the placement");

  /* Into bound memory: the caller's arrays receive the values. */
  {
    static float gate[E * H];
    sy_layer_t bound = make_layer(ctx, H);
    CHECK(sy_layer_bind_param(bound, "gate.weight", gate, E * H) == SY_OK, "%s",
          sy_layer_last_error(bound));
    CHECK(sy_layer_load(bound, dir, 1, NULL) == SY_OK, "%s", sy_layer_last_error(bound));
    CHECK(gate[5] == value(3, 0, 5), "bound gate %g", (double)gate[5]);
    sy_layer_destroy(bound);
  }

  /* Refusals fail every rank, naming the rank and the file, and change nothing. */
  visit(loaded, 9, 0);
  char path[512];
  snprintf(path, sizeof path, "%s/none", dir);
  CHECK(sy_layer_load(loaded, path, 1, NULL) == SY_INVALID_ARGUMENT, "missing dir");
  CHECK(strstr(sy_layer_last_error(loaded), "rank 0: ") != NULL, "%s",
        sy_layer_last_error(loaded));
  /* Truncate the shard of the rank that is primary holder of the last expert. */
  snprintf(path, sizeof path, "%s/step-7/shard-%d.bin", dir, (E - 1 + 1) % world);
  if (rank == 0) CHECK(truncate(path, 100) == 0, "truncate %s", path);
  MPI_Barrier(MPI_COMM_WORLD);
  CHECK(sy_layer_load(loaded, dir, 0, NULL) == SY_INVALID_ARGUMENT, "truncated shard");
  CHECK(strstr(sy_layer_last_error(loaded), path) != NULL &&
            strstr(sy_layer_last_error(loaded), "truncated") != NULL,
        "%s", sy_layer_last_error(loaded));
  CHECK(visit(loaded, 9, 1) == 0, "a failed load changed the layer");
  sy_layer_t other = make_layer(ctx, 2 * H);
  CHECK(sy_layer_load(other, dir, 1, NULL) == SY_INVALID_ARGUMENT, "foreign config");
  CHECK(strstr(sy_layer_last_error(other), "config digest") != NULL, "%s",
        sy_layer_last_error(other));
  CHECK(sy_layer_save(saved, NULL, 1) == SY_INVALID_ARGUMENT, "NULL dir");

  sy_layer_destroy(other);
  sy_layer_destroy(adopted);
  sy_layer_destroy(loaded);
  sy_layer_destroy(saved);
  sy_context_destroy(ctx);
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "%s", cmd);
  }
  int counts[2] = {passed, failed};
  MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%d passed, %d failed\n", counts[0], counts[1]);
  MPI_Finalize();
  return counts[1] == 0 ? 0 : 1;
}
