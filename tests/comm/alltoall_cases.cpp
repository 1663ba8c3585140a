#include "tests/comm/alltoall_cases.h"

#include "comm/alltoall/bf16.h"

#include <gtest/gtest.h>

#include <random>

namespace switchyard::comm::test {

namespace {

uint8_t token_byte(int src, int64_t token, size_t j) {
  return static_cast<uint8_t>(src * 131 + token * 31 + static_cast<int64_t>(j) * 7 + 1);
}
uint8_t side_byte(int src, int dst, int64_t token, size_t j) {
  return static_cast<uint8_t>(src * 17 + dst * 59 + token * 13 + static_cast<int64_t>(j) * 3 + 5);
}
// Integer-valued and small, so every sum is exact in fp32 and fp64.
double result_value(int src, int dst, int64_t token, int64_t e) {
  return static_cast<double>((src + 1) * 1000 + dst * 100 + token % 50 + e);
}
// Below 16, so every partial sum of up to 16 ranks' rows is an integer below 256: exact in bf16.
float bf16_value(int src, int dst, int64_t token, int64_t e) {
  return static_cast<float>((src * 3 + dst * 5 + token + e) % 16);
}

}  // namespace

Routes make_routes(Scenario scenario, uint64_t seed, int src, int world) {
  std::mt19937_64 gen(seed * 1000003 + static_cast<uint64_t>(src));
  Routes r;
  r.num_tokens = 1 + static_cast<int64_t>(gen() % 40);
  r.to.resize(static_cast<size_t>(world));
  if (scenario == Scenario::last_rank_has_no_tokens && src == world - 1) r.num_tokens = 0;
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    for (int d = 0; d < world; ++d) {
      bool send = false;
      switch (scenario) {
        case Scenario::random:
        case Scenario::last_rank_has_no_tokens:
          send = gen() % 100 < 40;
          break;
        case Scenario::odd_ranks_send_nothing:
          send = src % 2 == 0 && gen() % 100 < 50;
          break;
        case Scenario::all_to_rank0:
          send = d == 0;
          break;
        case Scenario::all_to_all:
          send = true;
          break;
        case Scenario::nothing_at_all:
          break;
      }
      if (send) r.to[static_cast<size_t>(d)].push_back(t);
    }
  }
  // Send order within a destination is the caller's choice: shuffle it.
  for (auto& tokens : r.to) {
    for (size_t i = tokens.size(); i > 1; --i) std::swap(tokens[i - 1], tokens[gen() % i]);
  }
  return r;
}

RouteLayout layout_of(const Routes& r, int world) {
  RouteLayout layout;
  layout.world = world;
  layout.num_tokens = r.num_tokens;
  layout.send_offsets.push_back(0);
  for (const auto& tokens : r.to) {
    layout.send_tokens.insert(layout.send_tokens.end(), tokens.begin(), tokens.end());
    layout.send_offsets.push_back(static_cast<int64_t>(layout.send_tokens.size()));
  }
  return layout;
}

void run_case(Communicator& comm, AllToAll& a2a, const Case& c) {
  const int me = comm.rank();
  const int world = comm.size();
  const Routes mine = make_routes(c.scenario, c.seed, me, world);
  RouteLayout layout = layout_of(mine, world);
  a2a.exchange_counts(layout);

  // What each source sends this rank, in the order it will arrive.
  std::vector<int> row_src;
  std::vector<int64_t> row_token;
  std::vector<int64_t> expected_offsets{0};
  for (int s = 0; s < world; ++s) {
    const Routes theirs = make_routes(c.scenario, c.seed, s, world);
    for (int64_t t : theirs.to[static_cast<size_t>(me)]) {
      row_src.push_back(s);
      row_token.push_back(t);
    }
    expected_offsets.push_back(static_cast<int64_t>(row_src.size()));
  }
  EXPECT_EQ(layout.recv_offsets, expected_offsets);
  // On a mismatch this rank still makes every call its peers make, with buffers sized as the
  // library expects, so the failure stays local instead of stalling the others.
  const bool counts_ok = layout.recv_offsets == expected_offsets;
  const size_t recv_rows = static_cast<size_t>(layout.num_recv_rows());
  if (!counts_ok) row_src.clear();

  std::vector<uint8_t> tokens(static_cast<size_t>(mine.num_tokens) * c.token_bytes);
  for (int64_t t = 0; t < mine.num_tokens; ++t) {
    for (size_t j = 0; j < c.token_bytes; ++j) {
      tokens[static_cast<size_t>(t) * c.token_bytes + j] = token_byte(me, t, j);
    }
  }
  std::vector<uint8_t> side(static_cast<size_t>(layout.num_send_rows()) * c.side_bytes);
  for (int d = 0; d < world; ++d) {
    for (int64_t i = layout.send_offsets[static_cast<size_t>(d)];
         i < layout.send_offsets[static_cast<size_t>(d) + 1]; ++i) {
      for (size_t j = 0; j < c.side_bytes; ++j) {
        side[static_cast<size_t>(i) * c.side_bytes + j] =
            side_byte(me, d, layout.send_tokens[static_cast<size_t>(i)], j);
      }
    }
  }
  std::vector<uint8_t> recv_tokens(recv_rows * c.token_bytes, 0);
  std::vector<uint8_t> recv_side(recv_rows * c.side_bytes, 0);
  a2a.dispatch(layout, tokens.data(), c.token_bytes, c.side_bytes ? side.data() : nullptr,
               c.side_bytes, recv_tokens.data(), c.side_bytes ? recv_side.data() : nullptr);
  size_t wrong_token_bytes = 0;
  size_t wrong_side_bytes = 0;
  for (size_t i = 0; i < row_src.size(); ++i) {
    for (size_t j = 0; j < c.token_bytes; ++j) {
      wrong_token_bytes +=
          recv_tokens[i * c.token_bytes + j] != token_byte(row_src[i], row_token[i], j);
    }
    for (size_t j = 0; j < c.side_bytes; ++j) {
      wrong_side_bytes +=
          recv_side[i * c.side_bytes + j] != side_byte(row_src[i], me, row_token[i], j);
    }
  }
  EXPECT_EQ(wrong_token_bytes, 0u);
  EXPECT_EQ(wrong_side_bytes, 0u);

  constexpr int64_t kElems = kCombineElems;
  auto check_combine = [&]<typename T>(DataType dtype, T) {
    std::vector<T> rows(recv_rows * kElems, T(0));
    for (size_t i = 0; i < row_src.size(); ++i) {
      for (int64_t e = 0; e < kElems; ++e) {
        rows[i * kElems + static_cast<size_t>(e)] =
            static_cast<T>(result_value(row_src[i], me, row_token[i], e));
      }
    }
    std::vector<T> out(static_cast<size_t>(mine.num_tokens) * kElems, T(-7));
    a2a.combine(layout, dtype, rows.data(), kElems, out.data());
    std::vector<T> expected(out.size(), T(0));
    for (int d = 0; d < world; ++d) {
      for (int64_t t : mine.to[static_cast<size_t>(d)]) {
        for (int64_t e = 0; e < kElems; ++e) {
          expected[static_cast<size_t>(t * kElems + e)] +=
              static_cast<T>(result_value(me, d, t, e));
        }
      }
    }
    EXPECT_EQ(out, expected) << (dtype == DataType::fp32 ? "fp32" : "fp64") << " combine";
  };
  // bf16 (bit patterns): values whose sums are exact in bf16, so flat and hierarchical (which
  // rounds each node's sum) must both give exactly the rounded reference.
  {
    std::vector<uint16_t> rows(recv_rows * kElems, 0);
    for (size_t i = 0; i < row_src.size(); ++i) {
      for (int64_t e = 0; e < kElems; ++e) {
        rows[i * kElems + static_cast<size_t>(e)] =
            float_to_bf16(bf16_value(row_src[i], me, row_token[i], e));
      }
    }
    std::vector<uint16_t> out(static_cast<size_t>(mine.num_tokens) * kElems, 0xbeef);
    a2a.combine(layout, DataType::bf16, rows.data(), kElems, out.data());
    std::vector<float> expected(out.size(), 0.0f);
    for (int d = 0; d < world; ++d) {
      for (int64_t t : mine.to[static_cast<size_t>(d)]) {
        for (int64_t e = 0; e < kElems; ++e) {
          expected[static_cast<size_t>(t * kElems + e)] += bf16_value(me, d, t, e);
        }
      }
    }
    std::vector<uint16_t> expected_bits(expected.size());
    for (size_t k = 0; k < expected.size(); ++k) expected_bits[k] = float_to_bf16(expected[k]);
    EXPECT_EQ(out, expected_bits) << "bf16 combine";
  }
  // fp64 last: callers read the byte counts of a combine of 8-byte elements.
  check_combine(DataType::fp32, float{});
  check_combine(DataType::fp64, double{});
}

}  // namespace switchyard::comm::test
