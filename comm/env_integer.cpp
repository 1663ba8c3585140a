#include "comm/env_integer.h"

#include <fmt/format.h>

#include <cstdlib>

#include "comm/error.h"

namespace switchyard::comm {

std::optional<long long> env_integer(const char* name, long long min, long long max,
                                     std::string_view need) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (*end != '\0' || v < min || v > max) {
    throw CommError(ErrorCode::invalid_argument, fmt::format("{}='{}': {}", name, text, need));
  }
  return v;
}

}  // namespace switchyard::comm
