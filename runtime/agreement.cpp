#include "runtime/agreement.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>

#include <fmt/format.h>

namespace switchyard {

namespace {

// Longest text one rank contributes to an error-path gather: messages and field values beyond it
// are cut (they are for people to read, and the gather's size is world * this).
constexpr size_t kMaxText = 65536;

uint64_t fnv1a(uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

uint64_t digest_of(const std::vector<AgreedField>& fields) {
  uint64_t hash = 14695981039346656037ull;
  for (const auto& [name, value] : fields) {
    hash = fnv1a(hash, name);
    hash = fnv1a(hash, std::string_view("\0", 1));
    hash = fnv1a(hash, value);
    hash = fnv1a(hash, std::string_view("\0", 1));
  }
  return hash;
}

// Every rank's text, through sums over disjoint slots (x + 0 is exact in int64, so each slot comes
// back with its own bits). Two all-reduces; only ever called on an error path.
std::vector<std::string> allgather_text(comm::Communicator& comm, std::string_view mine) {
  const int world = comm.size();
  std::vector<int64_t> lengths(world, 0);
  lengths[comm.rank()] = static_cast<int64_t>(std::min(mine.size(), kMaxText));
  comm.allreduce_sum(lengths.data(), lengths.size());
  std::vector<size_t> first_word(world + 1, 0);
  for (int r = 0; r < world; ++r) {
    first_word[r + 1] = first_word[r] + (static_cast<size_t>(lengths[r]) + 7) / 8;
  }
  std::vector<int64_t> words(first_word[world], 0);
  std::memcpy(words.data() + first_word[comm.rank()], mine.data(),
              static_cast<size_t>(lengths[comm.rank()]));
  comm.allreduce_sum(words.data(), words.size());
  std::vector<std::string> texts(world);
  for (int r = 0; r < world; ++r) {
    texts[r].assign(reinterpret_cast<const char*>(words.data() + first_word[r]),
                    static_cast<size_t>(lengths[r]));
  }
  return texts;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ranks[i]);
  }
  return out;
}

std::string serialize(const std::vector<AgreedField>& fields) {
  std::string text;
  for (const auto& [name, value] : fields) {
    text += name;
    text += '\0';
    text += value.substr(0, 200);
    text += '\0';
  }
  return text;
}

std::vector<AgreedField> deserialize(const std::string& text) {
  std::vector<AgreedField> fields;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t name_end = text.find('\0', pos);
    if (name_end == std::string::npos) break;
    const size_t value_end = text.find('\0', name_end + 1);
    if (value_end == std::string::npos) break;
    fields.emplace_back(text.substr(pos, name_end - pos),
                        text.substr(name_end + 1, value_end - name_end - 1));
    pos = value_end + 1;
  }
  return fields;
}

// "hidden: 64 on ranks 0, 2; 128 on rank 1" for every field whose value differs between ranks.
std::string describe_disagreement(const std::vector<std::string>& texts) {
  std::vector<std::vector<AgreedField>> per_rank;
  for (const auto& text : texts) per_rank.push_back(deserialize(text));
  std::vector<std::string> names;
  for (const auto& fields : per_rank) {
    for (const auto& field : fields) {
      if (std::find(names.begin(), names.end(), field.first) == names.end()) {
        names.push_back(field.first);
      }
    }
  }
  std::string out;
  for (const auto& name : names) {
    std::map<std::string, std::vector<int>> ranks_of_value;
    for (size_t r = 0; r < per_rank.size(); ++r) {
      std::string value = "(absent)";
      for (const auto& field : per_rank[r]) {
        if (field.first == name) value = field.second;
      }
      ranks_of_value[value].push_back(static_cast<int>(r));
    }
    if (ranks_of_value.size() < 2) continue;
    std::string values;
    for (const auto& [value, ranks] : ranks_of_value) {
      values += fmt::format("{}{} on {}", values.empty() ? "" : "; ", value, rank_list(ranks));
    }
    out += fmt::format("{}{}: {}", out.empty() ? "" : ". ", name, values);
  }
  return out;
}

}  // namespace

void append_placement_fields(const planner::ExpertPlacement& placement,
                             std::vector<AgreedField>& fields) {
  fields.emplace_back("placement: devices", std::to_string(placement.num_devices()));
  fields.emplace_back("placement: experts", std::to_string(placement.num_experts()));
  for (int e = 0; e < placement.num_experts(); ++e) {
    std::string devices;
    for (int d : placement.replicas(e)) {
      if (!devices.empty()) devices += ',';
      devices += std::to_string(d);
    }
    fields.emplace_back(fmt::format("placement: devices of expert {}", e), "[" + devices + "]");
  }
}

void raise_collective_failure(comm::Communicator& comm, std::string_view what,
                              const LocalStatus& status) {
  const std::string mine =
      status.failed() ? fmt::format("{}\n{}", static_cast<int>(*status.code), status.message) : "";
  const std::vector<std::string> texts = allgather_text(comm, mine);
  std::string failures;
  std::optional<ErrorCode> first_code;
  int failed = 0;
  for (size_t r = 0; r < texts.size(); ++r) {
    if (texts[r].empty()) continue;
    const size_t newline = texts[r].find('\n');
    const auto code = static_cast<ErrorCode>(std::stoi(texts[r].substr(0, newline)));
    if (!first_code) first_code = code;
    failures += fmt::format("{}rank {}: {}", failures.empty() ? "" : "; ", r,
                            texts[r].substr(newline + 1));
    ++failed;
  }
  // The failing rank's own code everywhere, so that every rank's caller can branch alike.
  throw CollectiveFailure(first_code.value_or(ErrorCode::internal),
              fmt::format("{} failed on {} of {} ranks, so on every rank (none went ahead): {}",
                          what, failed, comm.size(), failures));
}

void agree(comm::Communicator& comm, std::string_view what, const LocalStatus& status,
           const std::vector<AgreedField>& fields, std::string_view remedy) {
  // Per rank: [failed, digest] in its own slots, summed into every rank's copy.
  const int world = comm.size();
  std::vector<int64_t> slots(2 * static_cast<size_t>(world), 0);
  slots[2 * comm.rank()] = status.failed() ? 1 : 0;
  const uint64_t digest = digest_of(fields);
  std::memcpy(&slots[2 * comm.rank() + 1], &digest, sizeof digest);
  comm.allreduce_sum(slots.data(), slots.size());
  bool any_failed = false, same = true;
  for (int r = 0; r < world; ++r) {
    any_failed = any_failed || slots[2 * r] != 0;
    same = same && slots[2 * r + 1] == slots[1];
  }
  if (any_failed) raise_collective_failure(comm, what, status);
  if (same) return;
  const std::string differences = describe_disagreement(allgather_text(comm, serialize(fields)));
  throw CollectiveFailure(ErrorCode::invalid_argument,
                          fmt::format("{}: the {} ranks disagree, so no rank went ahead: {}. {}", what, world,
                          differences.empty() ? "(values differ beyond their first 200 characters)"
                                              : differences,
                          remedy));
}

}  // namespace switchyard
