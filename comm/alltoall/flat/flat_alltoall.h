// Private: the "flat" all-to-all. Every rank exchanges directly with every other rank over the
// communicator's transport, all transfers posted at once; a rank's own rows are copied locally.
#pragma once

#include "comm/alltoall/alltoall.h"
#include "comm/alltoall/scratch.h"

namespace switchyard::comm {

class FlatAllToAll final : public AllToAll {
 public:
  explicit FlatAllToAll(Communicator& comm) : comm_(comm) {}

  std::string_view name() const override { return "flat"; }
  void exchange_counts(RouteLayout& layout) override;
  void dispatch(const RouteLayout& layout, const void* tokens, size_t token_bytes, const void* side,
                size_t side_bytes, void* recv_tokens, void* recv_side) override;
  void combine(const RouteLayout& layout, DataType dtype, const void* rows, int64_t elems,
               void* out) override;

 private:
  Communicator& comm_;
  // Wire buffers kept between calls: fresh ones would cost a page fault and a zeroing per page on
  // every call, as much as the copies themselves at 64 KiB to 1 MiB per peer.
  ScratchBuffers scratch_;
};

}  // namespace switchyard::comm
