#include "comm/alltoall/layout_check.h"

#include <fmt/format.h>

#include "comm/error.h"

namespace switchyard::comm {

namespace {

[[noreturn]] void fail(const char* what, const std::string& problem) {
  throw CommError(ErrorCode::invalid_argument,
                  fmt::format("{}: invalid RouteLayout: {}", what, problem));
}

void check_offsets(const std::vector<int64_t>& offsets, int world, const char* name,
                   const char* what) {
  if (offsets.size() != static_cast<size_t>(world) + 1) {
    fail(what, fmt::format("{} has {} entries, expected world + 1 = {}", name, offsets.size(),
                           world + 1));
  }
  if (offsets[0] != 0) fail(what, fmt::format("{}[0] is {}, expected 0", name, offsets[0]));
  for (int d = 0; d < world; ++d) {
    if (offsets[d + 1] < offsets[d]) {
      fail(what, fmt::format("{} decreases at rank {} ({} then {})", name, d, offsets[d],
                             offsets[d + 1]));
    }
  }
}

}  // namespace

void check_layout(const RouteLayout& layout, int comm_size, bool need_recv, const char* what) {
  if (layout.world != comm_size) {
    fail(what,
         fmt::format("world is {} but the communicator has {} ranks", layout.world, comm_size));
  }
  if (layout.num_tokens < 0) fail(what, fmt::format("num_tokens is {}", layout.num_tokens));
  check_offsets(layout.send_offsets, layout.world, "send_offsets", what);
  if (static_cast<int64_t>(layout.send_tokens.size()) != layout.num_send_rows()) {
    fail(what, fmt::format("send_tokens has {} entries but send_offsets ends at {}",
                           layout.send_tokens.size(), layout.num_send_rows()));
  }
  // last_dest[t] = the last destination token t was listed for; rows come grouped by destination.
  std::vector<int> last_dest(static_cast<size_t>(layout.num_tokens), -1);
  for (int d = 0; d < layout.world; ++d) {
    for (int64_t i = layout.send_offsets[d]; i < layout.send_offsets[d + 1]; ++i) {
      const int64_t t = layout.send_tokens[static_cast<size_t>(i)];
      if (t < 0 || t >= layout.num_tokens) {
        fail(what, fmt::format("send_tokens[{}] = {} is outside [0, num_tokens = {})", i, t,
                               layout.num_tokens));
      }
      if (last_dest[static_cast<size_t>(t)] == d) {
        fail(what, fmt::format("token {} is listed twice for rank {} (send row {}); send it once "
                               "per destination",
                               t, d, i));
      }
      last_dest[static_cast<size_t>(t)] = d;
    }
  }
  if (need_recv) {
    if (layout.recv_offsets.empty()) {
      fail(what, "recv_offsets is empty; call exchange_counts first");
    }
    check_offsets(layout.recv_offsets, layout.world, "recv_offsets", what);
  }
}

void require_buffer(const void* buffer, int64_t rows, size_t row_bytes, const char* name,
                    const char* what) {
  SY_ENFORCE_ARG(!(buffer == nullptr && rows > 0 && row_bytes > 0),
                 "{}: {} is null but holds {} rows of {} bytes", what, name, rows, row_bytes);
}

size_t check_combine_args(const RouteLayout& layout, int comm_size, DataType dtype,
                          const void* rows, int64_t elems, const void* out, const char* what) {
  check_layout(layout, comm_size, true, what);
  SY_ENFORCE_ARG(elems >= 0, "{}: elems is {}", what, elems);
  const size_t elem_bytes = dtype == DataType::fp32   ? sizeof(float)
                            : dtype == DataType::bf16 ? sizeof(uint16_t)
                                                      : sizeof(double);
  const size_t row_bytes = static_cast<size_t>(elems) * elem_bytes;
  require_buffer(rows, layout.num_recv_rows(), row_bytes, "rows", what);
  require_buffer(out, layout.num_tokens, row_bytes, "out", what);
  return row_bytes;
}

}  // namespace switchyard::comm
