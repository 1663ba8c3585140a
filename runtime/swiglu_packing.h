// One expert's three tensors packed one after another: the message format of replica gradient
// sums, expert migrations and the shared experts' gradient all-reduce.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "runtime/moe_params.h"

namespace switchyard {

// Appends p's three tensors to out (the wire format of replica gradients and migrations).
template <typename T>
inline void append_swiglu(std::vector<T>& out, const SwigluParams<T>& p) {
  out.insert(out.end(), p.gate_proj.begin(), p.gate_proj.end());
  out.insert(out.end(), p.up_proj.begin(), p.up_proj.end());
  out.insert(out.end(), p.down_proj.begin(), p.down_proj.end());
}

// Copies the next three tensors' worth of `packed` (from `offset`) into p.
template <typename T>
inline void unpack_swiglu(const std::vector<T>& packed, size_t& offset, SwigluParams<T>& p) {
  for (auto* t : {&p.gate_proj, &p.up_proj, &p.down_proj}) {
    std::copy_n(packed.begin() + offset, t->size(), t->begin());
    offset += t->size();
  }
}

// Adds the three tensors packed at the start of `packed` (append_swiglu's layout) into p.
template <typename T>
inline void add_packed_swiglu(kernels::Backend<T>& backend, const std::vector<T>& packed,
                              SwigluParams<T>& p) {
  size_t offset = 0;
  for (auto* t : {&p.gate_proj, &p.up_proj, &p.down_proj}) {
    backend.add(t->data(), packed.data() + offset, static_cast<int64_t>(t->size()));
    offset += t->size();
  }
}

}  // namespace switchyard
