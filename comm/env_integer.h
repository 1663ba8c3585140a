// Whole-number settings read from the environment (SWITCHYARD_RELAY_CHUNKS, SWITCHYARD_MPI_PIECE).
#pragma once

#include <optional>
#include <string_view>

namespace switchyard::comm {

// The value of `name`, or nullopt when it is unset or empty. Throws CommError(invalid_argument)
// "NAME='text': <need>" when it is not a whole number in [min, max].
std::optional<long long> env_integer(const char* name, long long min, long long max,
                                     std::string_view need);

}  // namespace switchyard::comm
