#include "tools/sy-bench/workload.h"

#include "comm/alltoall/bf16.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace switchyard::bench {

int owner_of(int expert, int experts, int world) {
  return static_cast<int>(static_cast<int64_t>(expert) * world / experts);
}

float payload(int source, int64_t token, int64_t element, int modulus) {
  return static_cast<float>((source * 7919 + token * 31 + element) % modulus);
}

size_t element_bytes(const WorkloadOptions& options) { return options.bf16 ? 2 : sizeof(float); }

Workload make_workload(const WorkloadOptions& o, int rank, int world) {
  std::mt19937_64 gen(o.seed * 1000003 + static_cast<uint64_t>(rank));
  std::vector<double> weight(static_cast<size_t>(o.experts));
  for (int e = 0; e < o.experts; ++e) weight[static_cast<size_t>(e)] = std::pow(e + 1.0, -o.zipf);
  Workload w;
  w.experts.reserve(static_cast<size_t>(o.tokens * o.topk));
  for (int64_t t = 0; t < o.tokens; ++t) {
    // Without replacement: a drawn expert's weight drops to zero for the rest of the token.
    std::vector<double> left = weight;
    for (int k = 0; k < o.topk; ++k) {
      std::discrete_distribution<int> pick(left.begin(), left.end());
      const int e = pick(gen);
      left[static_cast<size_t>(e)] = 0.0;
      w.experts.push_back(e);
    }
  }
  // bf16 carries 8 significant bits: a token's sum of at most max(ranks, top-k) copies (flat and
  // hierarchical add one per rank, the baseline one per expert) stays below 256.
  w.modulus = o.bf16 ? std::max(2, 256 / std::max(world, o.topk)) : 1024;
  w.x.resize(static_cast<size_t>(o.tokens * o.hidden));
  for (int64_t t = 0; t < o.tokens; ++t) {
    for (int64_t j = 0; j < o.hidden; ++j)
      w.x[static_cast<size_t>(t * o.hidden + j)] = payload(rank, t, j, w.modulus);
  }
  if (o.bf16) {
    w.x_bf16.resize(w.x.size());
    for (size_t i = 0; i < w.x.size(); ++i) w.x_bf16[i] = comm::float_to_bf16(w.x[i]);
  }

  comm::RouteLayout& l = w.layout;
  l.world = world;
  l.num_tokens = o.tokens;
  std::vector<std::vector<int64_t>> to(static_cast<size_t>(world));
  for (int64_t t = 0; t < o.tokens; ++t) {
    std::vector<bool> seen(static_cast<size_t>(world), false);
    for (int k = 0; k < o.topk; ++k) {
      const int d = owner_of(w.experts[static_cast<size_t>(t * o.topk + k)], o.experts, world);
      if (!seen[static_cast<size_t>(d)]) to[static_cast<size_t>(d)].push_back(t);
      seen[static_cast<size_t>(d)] = true;
    }
  }
  l.send_offsets.push_back(0);
  for (const auto& tokens : to) {
    for (int64_t t : tokens) {
      l.send_tokens.push_back(t);
      w.side.push_back(rank);
      w.side.push_back(static_cast<int32_t>(t));
    }
    l.send_offsets.push_back(static_cast<int64_t>(l.send_tokens.size()));
  }
  return w;
}

}  // namespace switchyard::bench
