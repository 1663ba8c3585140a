// Reading a JSON input file and its integer fields with errors that name the file and say what
// is wrong in one line: the planner's file readers (workload, plan) and sy-plan's scenarios.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace switchyard::planner {

// Input files larger than this are refused before parsing. The largest public workload (dsv3: 58
// layers of 256 expert loads) is 75 kB and a plan for 65536 slots of 58 layers about 25 MB;
// nlohmann's document takes several times the text in memory, so 256 MiB keeps a parse well
// within a few GiB.
inline constexpr std::uintmax_t kMaxJsonFileBytes = std::uintmax_t{256} << 20;

// The parsed file. Throws Error(internal) "<path>: <why>" when it cannot be read (missing, a
// directory, unreadable) and Error(invalid_argument) "<path>: ..." when it is too large or is not
// JSON (invalid UTF-8, truncated, numbers out of range).
inline nlohmann::json read_json_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw Error(ErrorCode::internal, path + ": no such file");
  if (fs::is_directory(status))
    throw Error(ErrorCode::internal, path + ": is a directory, not a file");
  if (fs::is_regular_file(status)) {
    const std::uintmax_t bytes = fs::file_size(path, ec);
    if (!ec && bytes > kMaxJsonFileBytes) {
      throw Error(ErrorCode::invalid_argument,
                  path + ": " + std::to_string(bytes) +
                      " bytes, more than the 256 MiB an input file may have");
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::internal, path + ": cannot open for reading");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& err) {  // parse errors and number overflow
    throw Error(ErrorCode::invalid_argument, path + ": not valid JSON: " + err.what());
  } catch (const std::ios_base::failure& err) {
    throw Error(ErrorCode::internal, path + ": read error: " + err.what());
  }
}

// `value` as an integer within [lo, hi]; Error(invalid_argument) naming `what` otherwise (floats,
// strings and integers that do not fit are refused, not truncated).
inline std::int64_t integer_in(const nlohmann::json& value, const std::string& what,
                               std::int64_t lo, std::int64_t hi) {
  if (!value.is_number_integer()) {
    throw Error(
        ErrorCode::invalid_argument,
        what + " must be an integer, not " +
            (value.is_number() ? std::string("a fraction") : std::string(value.type_name())));
  }
  const bool too_big = value.is_number_unsigned() &&
                       value.get<std::uint64_t>() >
                           static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  const std::int64_t v = too_big ? std::numeric_limits<std::int64_t>::max()
                                 : value.get<std::int64_t>();
  if (too_big || v < lo || v > hi) {
    throw Error(ErrorCode::invalid_argument,
                what + " is " + (too_big ? value.dump() : std::to_string(v)) + ", must be in [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

}  // namespace switchyard::planner
