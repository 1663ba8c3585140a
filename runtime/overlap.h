// Communication/compute overlap of the MoE layer: the options, and the controller that decides per
// call whether the step is pipelined and in how many token chunks.
//
// A pipelined step splits the call's tokens into chunks and runs each chunk's all-to-all on the
// layer's communication thread while the caller computes other chunks (MoeLayer). The chunk count
// is a computation granularity as well: the expert GEMMs of a chunk run on that chunk's rows, and
// BLAS results may differ in the last bits with the number of rows per call. Overlap on and off
// therefore give bit-identical forward outputs at the same chunk count; "off" with chunks = 1 is
// the unchunked layer.
#pragma once

#include <cstdint>
#include <string>

#include "comm/communicator.h"

namespace switchyard {

enum class OverlapMode {
  off,        // communication and compute take turns on the caller's thread
  on,         // pipelined; an error where no communication thread may be used
  automatic,  // measures both on the first steps and keeps the faster (off where no thread)
};

struct OverlapOptions {
  OverlapMode mode = OverlapMode::off;
  // Token chunks per call, >= 1; 0: chosen from the measured communication time, compute time and
  // the cost of one exchange round (1 when overlap is off).
  int chunks = 0;

  // Throws Error(invalid_argument) naming the bad field.
  void validate() const;
};

// "off" | "on" | "auto"; throws Error(invalid_argument) listing them otherwise.
OverlapMode parse_overlap_mode(const std::string& name);
// A chunk count as given on a command line: "auto" (0) or a count >= 1; throws Error
// (invalid_argument) otherwise.
int parse_overlap_chunks(const std::string& text);
const char* overlap_mode_name(OverlapMode mode);

// What one forward call runs; its backward follows the same chunks.
struct CallSchedule {
  bool pipelined = false;
  int chunks = 1;
};

// Measured on one rank over one step (forwards since the last step and one backward).
struct StepTiming {
  double seconds = 0;          // wall time of the layer's calls
  double comm_seconds = 0;     // inside all-to-all calls (counts exchanges included)
  double compute_seconds = 0;  // router, experts, shared experts, their backward
  double round_seconds = 0;    // inside counts exchanges (a round of small messages each)
  int rounds = 0;
  double rows_per_expert = 0;  // (token, expert) pairs per local expert in a forward
  bool pipelined = false;      // how the step ran
};

class OverlapController {
 public:
  // thread_allowed: whether a communication thread may use the communicator (MPI initialised with
  // at least MPI_THREAD_SERIALIZED, or no MPI). Throws Error(unsupported) for mode on without it.
  OverlapController(const OverlapOptions& options, bool thread_allowed);

  const OverlapOptions& options() const { return options_; }
  CallSchedule next_forward() const { return schedule_; }
  bool backward_pipelined() const { return schedule_.pipelined; }

  // At the end of every backward call, on every rank. Collective (two small all-reduces) on the
  // steps where a decision is due; otherwise local. Decisions are rank 0's, so ranks agree.
  void end_step(comm::Communicator& comm, const StepTiming& step);

  // The decisions so far, for logs: e.g. "auto: 8 chunks (comm 120 ms, compute 200 ms, round
  // 0.3 ms); pipelined 290 ms vs serial 320 ms: on".
  const std::string& decision() const { return decision_; }

 private:
  OverlapOptions options_;
  CallSchedule schedule_;
  int steps_ = 0;
  bool settled_ = false;
  double best_serial_ = 0;     // seconds of the fastest probed serial step
  double best_pipelined_ = 0;  // of the fastest probed pipelined step
  StepTiming serial_probe_;    // the fastest serial probe's split
  std::string decision_;
};

// Whether a communication thread may drive the communicator's transports: MPI not initialised
// (store launch; UCX's worker is serialised), or initialised with at least MPI_THREAD_SERIALIZED.
bool comm_thread_allowed();

// The chunk count a pipelined step should use given the (mean over ranks) serial step's split:
// more chunks hide more of min(comm, compute), but each costs a few exchange rounds and splits
// every expert's GEMM once more (its weights are packed once per call: about 14 rows' worth of
// work), so the step time ~ max + min / C + C * (rounds_per_chunk * round + compute * 14 /
// rows_per_expert), minimised at C = sqrt(min / that per-chunk cost). Where there is little to
// hide (one node: the all-to-all is a few percent of the step) that is 1 chunk. Also never below
// 48 rows per expert call (7 chunks of ~14 rows doubled the expert time on a 2-core Xeon), and in
// [1, 16].
int choose_chunks(double comm_seconds, double compute_seconds, double round_seconds,
                  double rows_per_expert);

// The first token of chunk c (0 <= c <= chunks; chunk c is [begin(c), begin(c + 1))). Of 3 or
// more chunks the first and the last get half the tokens of the others: the first chunk's
// dispatch and the last one's combine are the pipeline's fill and drain, which no expert compute
// hides, so they are kept short. Chunks may be empty (fewer tokens than chunks).
int64_t chunk_begin(int64_t tokens, int chunks, int c);

}  // namespace switchyard
