#include "runtime/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <mutex>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "base/error.h"
#include "runtime/environment.h"

namespace switchyard {

namespace {

constexpr const char* kEnv = environment::kFault;
constexpr std::array kPhases = {FaultPhase::gate,        FaultPhase::dispatch,
                                FaultPhase::experts,     FaultPhase::combine,
                                FaultPhase::backward,    FaultPhase::grad_reduce,
                                FaultPhase::replan,      FaultPhase::migration,
                                FaultPhase::checkpoint};

enum class Action { crash, hang, pause, error };

struct Fault {
  bool armed = false;
  int rank = -1;
  FaultPhase phase = FaultPhase::gate;
  Action action = Action::crash;
  double seconds = 0;
};

[[noreturn]] void malformed(std::string_view spec, std::string_view why) {
  throw Error(ErrorCode::invalid_argument,
              fmt::format("{}='{}': {}; expected <rank>:<phase>:<crash|hang|delay|error>[:<seconds>] "
                          "with phase one of gate, dispatch, experts, combine, backward, "
                          "grad_reduce, replan, migration, checkpoint",
                          kEnv, spec, why));
}

Fault parse(std::string_view spec) {
  Fault fault;
  if (spec.empty()) return fault;
  std::array<std::string_view, 4> parts;
  size_t n = 0, start = 0;
  while (n < parts.size()) {
    const size_t colon = spec.find(':', start);
    parts[n++] = spec.substr(start, colon == std::string_view::npos ? colon : colon - start);
    if (colon == std::string_view::npos) break;
    start = colon + 1;
    if (n == parts.size()) malformed(spec, "too many fields");
  }
  if (n < 3) malformed(spec, "too few fields");
  const auto [end, ec] =
      std::from_chars(parts[0].data(), parts[0].data() + parts[0].size(), fault.rank);
  if (ec != std::errc() || end != parts[0].data() + parts[0].size() || fault.rank < 0) {
    malformed(spec, fmt::format("rank '{}' is not a non-negative integer", parts[0]));
  }
  bool known = false;
  for (FaultPhase p : kPhases) {
    if (parts[1] == fault_phase_name(p)) {
      fault.phase = p;
      known = true;
    }
  }
  if (!known) malformed(spec, fmt::format("unknown phase '{}'", parts[1]));
  if (parts[2] == "crash") {
    fault.action = Action::crash;
  } else if (parts[2] == "hang") {
    fault.action = Action::hang;
    fault.seconds = 3600;
  } else if (parts[2] == "error") {
    fault.action = Action::error;
  } else if (parts[2] == "delay") {
    fault.action = Action::pause;
    fault.seconds = 1;
  } else {
    malformed(spec, fmt::format("unknown action '{}'", parts[2]));
  }
  if (n == 4) {
    const std::string text(parts[3]);
    char* rest = nullptr;
    fault.seconds = std::strtod(text.c_str(), &rest);
    if (text.empty() || *rest != '\0' || !(fault.seconds >= 0) || fault.seconds > 86400) {
      malformed(spec, fmt::format("seconds '{}' is not a number in [0, 86400]", parts[3]));
    }
  }
  fault.armed = true;
  return fault;
}

struct ProcessFault {
  explicit ProcessFault(Fault f) : fault(f), pending(f.armed) {}
  std::mutex mutex;
  Fault fault;
  // Armed and not yet fired: the one load every injection point makes when no fault is set.
  std::atomic<bool> pending;
};

ProcessFault& process_fault() {
  static ProcessFault process(parse(fault_spec_from_env()));
  return process;
}

}  // namespace

const char* fault_phase_name(FaultPhase phase) {
  switch (phase) {
    case FaultPhase::gate: return "gate";
    case FaultPhase::dispatch: return "dispatch";
    case FaultPhase::experts: return "experts";
    case FaultPhase::combine: return "combine";
    case FaultPhase::backward: return "backward";
    case FaultPhase::grad_reduce: return "grad_reduce";
    case FaultPhase::replan: return "replan";
    case FaultPhase::migration: return "migration";
    case FaultPhase::checkpoint: return "checkpoint";
  }
  return "unknown";
}

std::string fault_spec_from_env() {
  const std::optional<std::string> value = environment::fault_spec();
  if (!value) return "";
  parse(*value);
  return *value;
}

void set_fault(const std::string& spec) {
  Fault fault = parse(spec);
  ProcessFault& process = process_fault();
  std::lock_guard lock(process.mutex);
  process.fault = fault;
  process.pending.store(fault.armed);
}

void inject_fault(FaultPhase phase, int rank) {
  ProcessFault& process = process_fault();
  if (!process.pending.load(std::memory_order_relaxed)) return;
  Fault fault;
  {
    std::lock_guard lock(process.mutex);
    if (!process.pending.load() || process.fault.rank != rank || process.fault.phase != phase) {
      return;
    }
    process.pending.store(false);
    fault = process.fault;
  }
  const char* names[] = {"crash", "hang", "delay", "error"};
  std::fprintf(stderr, "switchyard: %s: rank %d injects fault '%s' in phase %s\n", kEnv, rank,
               names[static_cast<int>(fault.action)], fault_phase_name(phase));
  std::fflush(stderr);
  const auto duration = std::chrono::duration<double>(fault.seconds);
  switch (fault.action) {
    case Action::crash:
      ::kill(::getpid(), SIGKILL);
      break;
    case Action::hang:
      std::this_thread::sleep_for(duration);
      std::_Exit(70);
    case Action::pause:
      std::this_thread::sleep_for(duration);
      break;
    case Action::error:
      throw Error(ErrorCode::internal,
                  fmt::format("{}: error injected on rank {} in phase {}", kEnv, rank,
                              fault_phase_name(phase)));
  }
}

}  // namespace switchyard
