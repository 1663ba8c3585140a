// Shared by the transport tests: every rank exchanges byte patterns with every rank.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

#include "comm/transport/transport.h"

namespace switchyard::comm::test {

enum class PostOrder { receives_first, sends_first };

// Every rank sends every rank (itself included) one message of each size, all with one tag, and
// receives the same from each, then checks every byte. The sizes differ, so a message matched out
// of order shows up as a truncation error or a wrong pattern. sends_first makes messages arrive
// before their receives are posted.
void exchange_patterns(Transport& transport, int rank, int size, std::chrono::milliseconds timeout,
                       const std::vector<size_t>& sizes, int tag, PostOrder order);

}  // namespace switchyard::comm::test
