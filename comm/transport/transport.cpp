#include "comm/transport/transport.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <vector>

#include "comm/error.h"
#include "comm/poll_pause.h"

namespace switchyard::comm {

namespace {

std::string timeout_message(std::span<const Request> pending, std::chrono::milliseconds timeout,
                            std::string_view what) {
  std::vector<int> from;
  std::vector<int> to;
  for (const Request& req : pending) (req.is_send ? to : from).push_back(req.peer);
  for (auto* peers : {&from, &to}) {
    std::sort(peers->begin(), peers->end());
    peers->erase(std::unique(peers->begin(), peers->end()), peers->end());
  }
  std::string stuck;
  if (!from.empty()) stuck = fmt::format("receives from rank(s) {}", fmt::join(from, ", "));
  if (!to.empty()) {
    stuck +=
        fmt::format("{}sends to rank(s) {}", stuck.empty() ? "" : " and ", fmt::join(to, ", "));
  }
  return fmt::format(
      "{}: timed out after {} ms; {} did not complete. Those peers may have failed or be stuck "
      "before this call (every rank must make the same sequence of calls); if they are only slow, "
      "raise the timeout (SWITCHYARD_TIMEOUT seconds, --timeout, CommOptions::timeout)",
      what, timeout.count(), stuck);
}

}  // namespace

void wait_all(Transport& transport, std::span<Request> requests, std::chrono::milliseconds timeout,
              std::string_view what, const std::atomic<bool>* interrupt) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<bool> done(requests.size(), false);
  size_t remaining = requests.size();
  poll_pause_restart();
  while (true) {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!done[i] && transport.test(requests[i])) {
        done[i] = true;
        --remaining;
      }
    }
    if (remaining == 0) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    if (interrupt != nullptr && interrupt->load(std::memory_order_relaxed)) break;
    poll_pause();
  }
  std::vector<Request> pending;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (done[i]) continue;
    pending.push_back(requests[i]);
    // The caller's buffers go away as the exception unwinds: nothing may write them later.
    transport.cancel(requests[i]);
  }
  SY_ENFORCE(!(interrupt != nullptr && interrupt->load(std::memory_order_relaxed)),
             ErrorCode::aborted,
             "{}: interrupted with {} transfer(s) pending (the caller is shutting the operation "
             "down; an earlier error says why)",
             what, pending.size());
  transport.note_failed_peer();
  throw CommError(ErrorCode::timeout, timeout_message(pending, timeout, what));
}

}  // namespace switchyard::comm
