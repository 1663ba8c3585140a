// bfloat16 as the all-to-all carries it (DataType::bf16): the upper 16 bits of an IEEE fp32, held
// in a uint16_t. Combine adds bf16 rows in fp32 and rounds each sum to bf16 once, to nearest with
// ties to even (as PyTorch and CUDA's __float2bfloat16 do).
#pragma once

#include <bit>
#include <cstdint>

namespace switchyard::comm {

inline float bf16_to_float(uint16_t v) {
  return std::bit_cast<float>(static_cast<uint32_t>(v) << 16);
}

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace switchyard::comm
