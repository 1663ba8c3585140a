// Fault injection for tests and drills: SWITCHYARD_FAULT=<rank>:<phase>:<action>[:<seconds>] makes
// that rank crash (SIGKILL, no clean-up, as a lost node), hang (sleep <seconds>, default 3600, then
// exit; a stuck process), delay (sleep <seconds>, default 1, then go on; a slow one) or error
// (throw Error(internal) there, as a failure inside the library would) the first time it reaches
// that phase. Unset (the default): every injection point is one branch on a
// value read once.
#pragma once

#include <string>
#include <string_view>

namespace switchyard {

// Every phase of a training step a rank can fail in.
enum class FaultPhase {
  gate,         // the router statistics' all-reduce (forward's first collective)
  dispatch,     // forward all-to-all to the experts
  experts,      // the local experts' forward compute
  combine,      // forward all-to-all back to the tokens
  backward,     // backward's first collective
  grad_reduce,  // the replicated gradients' all-reduce
  replan,       // measuring the device load for a re-plan
  migration,    // moving experts to a new placement
  checkpoint,   // writing or reading a checkpoint
};

const char* fault_phase_name(FaultPhase phase);

// Acts on SWITCHYARD_FAULT when it names this rank and phase (first time only).
void inject_fault(FaultPhase phase, int rank);

// Replaces the process's fault with spec (same form; "" disarms), armed anew: for tests that
// inject several faults in one process. Throws Error(invalid_argument) when malformed.
void set_fault(const std::string& spec);

// The SWITCHYARD_FAULT value that would be parsed, checked: "" when unset; throws
// Error(invalid_argument) naming the expected form when malformed (read at the first injection
// point too, so a typo never runs a drill without its fault).
std::string fault_spec_from_env();

}  // namespace switchyard
