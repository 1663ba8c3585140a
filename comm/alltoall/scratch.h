// Private: grow-only byte buffers that an all-to-all algorithm keeps from one call to the next.
// Fresh buffers for every call cost a page fault and a zeroing per page before the first byte is
// copied (tens of MB per call for a MoE layer's messages): with ranks sharing cores, that CPU time
// is taken from the ranks that should be moving data, and it delays the first message of a phase.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace switchyard::comm {

class ScratchBuffers {
 public:
  // Starts a call: the buffers handed out since the last reset may be handed out again.
  void reset() { next_ = 0; }
  // The next buffer of this call, `bytes` long, contents unspecified (not zeroed). Stays valid
  // until reset() (handing out more buffers does not move the earlier ones). Buffers only grow, so
  // calls of one shape reuse the same memory.
  std::span<std::byte> take(size_t bytes) {
    if (next_ == buffers_.size()) buffers_.emplace_back();
    std::vector<std::byte>& buffer = buffers_[next_++];
    if (buffer.size() < bytes) {
      buffer.clear();  // nothing to keep: avoid copying the old contents while growing
      buffer.shrink_to_fit();
      buffer.resize(bytes);
    }
    return {buffer.data(), bytes};
  }

 private:
  std::vector<std::vector<std::byte>> buffers_;
  size_t next_ = 0;
};

}  // namespace switchyard::comm
