#include "runtime/buffer_reuse.h"

#include <malloc.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "runtime/environment.h"

namespace switchyard {

namespace {

constexpr int kKeptBytes = 1 << 30;

struct Outcome {
  bool applied = false;
  const char* description = "";
};

Outcome& outcome() {
  static Outcome state;
  return state;
}

}  // namespace

bool reuse_freed_buffers() {
  static std::once_flag once;
  std::call_once(once, [] {
    Outcome& state = outcome();
    if (!environment::malloc_reuse()) {
      state.description = "malloc: glibc defaults (SWITCHYARD_MALLOC_REUSE=0)";
      return;
    }
    // The trim threshold as well: otherwise a freed block at the top of the heap goes back to the
    // system and the next call faults it in again.
    state.applied =
        mallopt(M_MMAP_THRESHOLD, kKeptBytes) == 1 && mallopt(M_TRIM_THRESHOLD, kKeptBytes) == 1;
    state.description = state.applied
                            ? "malloc: freed buffers below 1 GiB kept for reuse "
                              "(SWITCHYARD_MALLOC_REUSE=0 to leave glibc's defaults)"
                            : "malloc: this allocator refused the reuse settings; buffers are "
                              "mapped afresh per call";
  });
  return outcome().applied;
}

const char* buffer_reuse_description() {
  reuse_freed_buffers();
  return outcome().description;
}

}  // namespace switchyard
