// The metrics endpoint of a training layer, on every rank: a client thread scrapes while the layer
// runs forward and backward passes (and a silent client holds a connection the whole time), every
// scrape is well-formed Prometheus text with counters that never go back, and once the layer stops
// the figures match the layer's own: TrafficCounters, one histogram observation per all-to-all
// call, latencies inside PhaseTimes' (the timers nest), the imbalance of the last measure, and the
// placements applied with the bytes they migrated.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "runtime/metrics.h"
#include "runtime/metrics_server.h"
#include "runtime/moe_layer.h"
#include "tests/metrics/metrics_client.h"

namespace sy = switchyard;
using namespace switchyard::testing;

namespace {

sy::MoeConfig config() {
  sy::MoeConfig c;
  c.hidden = 32;
  c.num_experts = 8;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = 16;
  return c;
}

// Experts in reverse contiguous order: with two or more ranks every expert moves.
sy::planner::ExpertPlacement reversed(int experts, int world) {
  const auto base = sy::planner::ExpertPlacement::contiguous(experts, world);
  std::vector<int> owner(experts);
  for (int e = 0; e < experts; ++e) owner[e] = world - 1 - base.owner(e);
  return sy::planner::ExpertPlacement(owner, world);
}

double sent_bytes(const Exposition& e, const char* link) {
  return e.value("switchyard_alltoall_sent_bytes_total", {{"link", link}});
}

TEST(MetricsLayer, ScrapedWhileTrainingAndConsistentWithTheLayer) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  const sy::MoeConfig c = config();
  sy::MoeLayer<float> layer(c, comm, sy::planner::ExpertPlacement::contiguous(8, comm.size()));
  sy::init_params(layer.params(), 11);
  sy::Metrics metrics;
  layer.set_metrics(&metrics);
  sy::MetricsServer server(metrics, {.port = 0, .rank = comm.rank(),
                                     .read_timeout = std::chrono::milliseconds(500)});
  const uint16_t port = server.port();
  const std::string rank = std::to_string(comm.rank());

  const int silent = connect_loopback(port);  // never sends: must block neither layer nor scrapes
  std::atomic<bool> done{false};
  std::atomic<int> scrapes{0};
  std::thread client([&] {
    double last_bytes = 0, last_count = 0;
    while (!done.load()) {
      const std::string response = http_get(port);
      ASSERT_EQ(status_of(response), 200) << response;
      Exposition e;
      ASSERT_NO_THROW(e = parse_prometheus(body_of(response))) << body_of(response);
      const double bytes = sent_bytes(e, "intra_node") + sent_bytes(e, "inter_node");
      const double count = e.value("switchyard_dispatch_seconds_count", {{"pass", "forward"}});
      EXPECT_GE(bytes, last_bytes);
      EXPECT_GE(count, last_count);
      EXPECT_EQ(e.value("switchyard_replans_total", {{"rank", rank}}), 0);
      last_bytes = bytes;
      last_count = count;
      ++scrapes;
    }
  });

  const int64_t tokens = 24 + 8 * comm.rank();
  std::vector<float> x(tokens * c.hidden), y(x.size()), grad_y(x.size()), grad_x(x.size());
  std::mt19937 rng(comm.rank() + 1);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  for (auto& v : grad_y) v = normal(rng) * 1e-3f;
  std::vector<double> load;
  int64_t steps = 0;
  // Run until every rank's client has scraped a few times while the layer was running (the ranks
  // decide together: every call is collective), with a cap that only guards against a hang.
  for (double more = 1; more > 0 && steps < 20000; ++steps) {
    auto fwd = layer.forward(x.data(), tokens, c.hidden, y.data());
    layer.backward(*fwd.saved, grad_y.data(), grad_x.data());
    load = layer.measure_device_load();
    more = scrapes.load() < 5 ? 1 : 0;
    comm.allreduce_sum(&more, 1);
  }
  done = true;
  client.join();
  EXPECT_GE(scrapes.load(), 5);

  const Exposition e = parse_prometheus(body_of(http_get(port)));
  EXPECT_EQ(sent_bytes(e, "intra_node"), layer.traffic().intra_node_bytes);
  EXPECT_EQ(sent_bytes(e, "inter_node"), layer.traffic().inter_node_bytes);
  for (const char* h : {"switchyard_dispatch_seconds_count", "switchyard_combine_seconds_count"}) {
    for (const char* pass : {"forward", "backward"}) {
      EXPECT_EQ(e.value(h, {{"rank", rank}, {"pass", pass}}), steps) << h << " " << pass;
    }
  }
  // Each call's timer starts after and stops before the PhaseTimes one around it.
  const double dispatch = e.value("switchyard_dispatch_seconds_sum", {{"pass", "forward"}});
  const double combine = e.value("switchyard_combine_seconds_sum", {{"pass", "forward"}});
  EXPECT_GT(dispatch, 0);
  EXPECT_LE(dispatch, layer.times().dispatch * (1 + 1e-9));
  EXPECT_GT(combine, 0);
  EXPECT_LE(combine, layer.times().combine * (1 + 1e-9));
  double total = 0;
  for (double l : load) total += l;
  const double imbalance = *std::max_element(load.begin(), load.end()) * comm.size() / total;
  EXPECT_NEAR(e.value("switchyard_device_imbalance"), imbalance, 1e-12 * imbalance);

  // A re-placement: one applied, and over all ranks the bytes of every (expert, new holder).
  const auto next = reversed(c.num_experts, comm.size());
  int64_t moved = 0;
  for (int ex = 0; ex < c.num_experts; ++ex) {
    for (int d : next.replicas(ex)) moved += layer.placement().holds(d, ex) ? 0 : 1;
  }
  layer.apply_placement(next);
  const Exposition after = parse_prometheus(body_of(http_get(port)));
  EXPECT_EQ(after.value("switchyard_replans_total"), 1);
  double migrated = after.value("switchyard_migrated_bytes_total");
  comm.allreduce_sum(&migrated, 1);
  EXPECT_EQ(migrated, double(moved) * 3 * c.hidden * c.intermediate * sizeof(float));
  if (comm.size() > 1) {
    EXPECT_GT(moved, 0);
  }

  // The silent client was dropped by the deadline, not served.
  EXPECT_EQ(read_to_end(silent), "");
  ::close(silent);
}

}  // namespace
