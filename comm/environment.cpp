#include "comm/environment.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string_view>

#include "comm/error.h"

namespace switchyard::comm::environment {

namespace {

// The value of `name`, or nullptr when it is unset or empty.
const char* text_of(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

// The value of `name`, or nullopt when it is unset or empty. Throws CommError(invalid_argument)
// "NAME='text': <need>" when it is not a whole number in [min, max].
std::optional<long long> integer(const char* name, long long min, long long max,
                                 std::string_view need) {
  const char* text = text_of(name);
  if (text == nullptr) return std::nullopt;
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  SY_ENFORCE_ARG(!(*end != '\0' || v < min || v > max), "{}='{}': {}", name, text, need);
  return v;
}

std::optional<size_t> piece(const char* name) {
  const auto v = integer(name, 0, LLONG_MAX,
                         "give the largest inter-node message in bytes, or 0 for whole "
                         "messages");
  if (!v) return std::nullopt;
  return static_cast<size_t>(*v);
}

// The first of `names` that is set, as an int; -1 if none is.
int store_integer(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* text = text_of(name);
    if (text == nullptr) continue;
    int value = 0;
    const auto [end, ec] = std::from_chars(text, text + std::strlen(text), value);
    if (ec != std::errc() || *end != '\0') {
      throw CommError(ErrorCode::invalid_argument,
                      "store bootstrap: " + fmt::format("{}='{}' is not an integer", name, text));
    }
    return value;
  }
  return -1;
}

std::string text_or_empty(const char* name) {
  const char* text = text_of(name);
  return text != nullptr ? std::string(text) : std::string();
}

}  // namespace

std::chrono::milliseconds timeout() {
  constexpr const char* kEnv = "SWITCHYARD_TIMEOUT";
  const char* text = text_of(kEnv);
  if (text == nullptr) return std::chrono::seconds(120);
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  SY_ENFORCE_ARG(
      !(*end != '\0' || !(seconds > 0) || seconds > 7 * 86400.0),
      "{}='{}': give the timeout in seconds, more than 0 and at most 7 days (e.g. 30 or 0.5)", kEnv,
      text);
  return std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(seconds * 1000)));
}

const char* transport_variable(LinkClass link) {
  return link == LinkClass::intra ? "SWITCHYARD_INTRA" : "SWITCHYARD_INTER";
}

std::string transport(LinkClass link) { return text_or_empty(transport_variable(link)); }

std::optional<size_t> mpi_piece() { return piece("SWITCHYARD_MPI_PIECE"); }
std::optional<size_t> ucx_piece() { return piece("SWITCHYARD_UCX_PIECE"); }

std::optional<int> relay_chunks() {
  const auto v =
      integer("SWITCHYARD_RELAY_CHUNKS", 1, 4096, "need a whole number of chunks from 1 to 4096");
  if (!v) return std::nullopt;
  return static_cast<int>(*v);
}

bool shm_single_copy_off() {
  const char* text = std::getenv("SWITCHYARD_SHM_SINGLE_COPY");
  return text != nullptr && std::string(text) == "0";
}

std::string master_addr() { return text_or_empty("MASTER_ADDR"); }
std::string job_secret() { return text_or_empty("SWITCHYARD_JOB_SECRET"); }
int master_port() { return store_integer({"SWITCHYARD_MASTER_PORT", "MASTER_PORT"}); }
int rank() { return store_integer({"RANK"}); }
int world_size() { return store_integer({"WORLD_SIZE"}); }
int local_rank() { return store_integer({"LOCAL_RANK"}); }

}  // namespace switchyard::comm::environment
