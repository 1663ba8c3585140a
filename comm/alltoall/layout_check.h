// Private: validation of a RouteLayout against a communicator, shared by the all-to-all algorithms.
#pragma once

#include "comm/alltoall/alltoall.h"

namespace switchyard::comm {

// Throws CommError(invalid_argument) naming `what` and the first problem found: world differs from
// the communicator size; send_offsets not of size world + 1, not starting at 0 or decreasing;
// send_tokens not of num_send_rows entries; a token index outside [0, num_tokens) or listed twice
// for one destination; and, when need_recv, recv_offsets not a valid [world + 1] prefix sum.
void check_layout(const RouteLayout& layout, int comm_size, bool need_recv, const char* what);

// Throws CommError(invalid_argument) when buffer is null but should hold rows of row_bytes.
void require_buffer(const void* buffer, int64_t rows, size_t row_bytes, const char* name,
                    const char* what);

// Checks a combine call (layout, elems >= 0, non-null buffers where rows are expected) and
// returns the bytes of one row. Throws CommError(invalid_argument) naming `what`.
size_t check_combine_args(const RouteLayout& layout, int comm_size, DataType dtype,
                          const void* rows, int64_t elems, const void* out, const char* what);

}  // namespace switchyard::comm
