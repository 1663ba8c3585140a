// sy-bench's progress lines: durations as people read them, and off a terminal (as under CTest)
// a plain line about every tenth of the way and at the end, never one per step.
#include "tools/sy-bench/progress.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>
#include <string>

namespace switchyard::bench {
namespace {

TEST(Progress, DurationsReadAsPeopleSayThem) {
  EXPECT_EQ(human_duration(4.24), "4.2 s");
  EXPECT_EQ(human_duration(187), "3 min 07 s");
  EXPECT_EQ(human_duration(3720), "1 h 02 min");
  EXPECT_EQ(human_duration(-1), "?");
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Progress, OffATerminalAboutTenPlainLinesAndTheLast) {
  if (isatty(STDERR_FILENO) == 1) GTEST_SKIP() << "stderr is a terminal: progress rewrites a line";
  ::testing::internal::CaptureStderr();
  {
    Progress progress("test loop", 100, true);
    for (int i = 0; i < 100; ++i) progress.step(i < 5 ? "warm-up" : "");
  }
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_GE(count_lines(out), 10) << out;
  EXPECT_LE(count_lines(out), 12) << out;
  EXPECT_NE(out.find("test loop: 1/100 (warm-up)"), std::string::npos) << out;
  EXPECT_NE(out.find("test loop: 100/100, "), std::string::npos) << out;
  EXPECT_NE(out.find("left"), std::string::npos) << out;
}

TEST(Progress, OnlyTheReportingRankPrints) {
  ::testing::internal::CaptureStderr();
  {
    Progress progress("silent", 3, false);
    for (int i = 0; i < 3; ++i) progress.step();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

}  // namespace
}  // namespace switchyard::bench
