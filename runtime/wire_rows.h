// Token rows as the layer's all-to-alls carry them (MoeConfig.wire): the layer's own values, or
// their bfloat16 rounding in a staging buffer, which halves fp32's bytes on the wire and the copies
// that move them (DeepEP dispatches and combines in bf16 for the same reason).
#pragma once

#include <cstdint>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/alltoall/bf16.h"
#include "runtime/moe_config.h"

namespace switchyard {

template <typename T>
class WireRows {
 public:
  WireRows(WirePrecision precision, int64_t width)
      : bf16_(precision == WirePrecision::bf16), width_(width) {}

  size_t row_bytes() const { return width_ * (bf16_ ? sizeof(uint16_t) : sizeof(T)); }
  comm::DataType dtype() const {
    if (bf16_) return comm::DataType::bf16;
    return sizeof(T) == sizeof(double) ? comm::DataType::fp64 : comm::DataType::fp32;
  }

  // rows x width values to send: src itself, or its bf16 rounding held here. fp64 values go
  // through fp32 (comm/bf16.h rounds from fp32), which can differ from a direct fp64 -> bf16
  // rounding in the last bit at a near-tie.
  const void* encode(const T* src, int64_t rows) {
    if (!bf16_) return src;
    staging_.resize(rows * width_);
    for (int64_t i = 0; i < rows * width_; ++i) {
      staging_[i] = comm::float_to_bf16(static_cast<float>(src[i]));
    }
    return staging_.data();
  }

  // Where rows bound for dst arrive: dst itself, or a staging buffer that decode widens into dst.
  void* receive_into(T* dst, int64_t rows) {
    if (!bf16_) return dst;
    staging_.resize(rows * width_);
    return staging_.data();
  }
  void decode(T* dst, int64_t rows) const {
    if (!bf16_) return;
    for (int64_t i = 0; i < rows * width_; ++i) dst[i] = comm::bf16_to_float(staging_[i]);
  }

 private:
  bool bf16_;
  int64_t width_;
  std::vector<uint16_t> staging_;
};

// AllToAll::dispatch of layout.num_tokens rows of `width` values (src) into dst, one row per
// received row, in the wire's precision; returns the bytes of a row on the wire.
template <typename T>
size_t dispatch_rows(comm::AllToAll& alltoall, WirePrecision wire, const comm::RouteLayout& layout,
                     const T* src, int64_t width, const void* side, size_t side_bytes, T* dst,
                     void* recv_side) {
  WireRows<T> send(wire, width), recv(wire, width);
  const int64_t rows = layout.num_recv_rows();
  alltoall.dispatch(layout, send.encode(src, layout.num_tokens), send.row_bytes(), side, side_bytes,
                    recv.receive_into(dst, rows), recv_side);
  recv.decode(dst, rows);
  return send.row_bytes();
}

// AllToAll::combine of one row of `width` values per received row (rows) into out, one summed row
// per token, in the wire's precision; returns the bytes of a row on the wire.
template <typename T>
size_t combine_rows(comm::AllToAll& alltoall, WirePrecision wire, const comm::RouteLayout& layout,
                    const T* rows, int64_t width, T* out) {
  WireRows<T> send(wire, width), back(wire, width);
  alltoall.combine(layout, send.dtype(), send.encode(rows, layout.num_recv_rows()), width,
                   back.receive_into(out, layout.num_tokens));
  back.decode(out, layout.num_tokens);
  return send.row_bytes();
}

}  // namespace switchyard
