// The OpenBLAS core check: the ISA levels it compares, and (run by CTest a second time with
// OPENBLAS_CORETYPE=Prescott, see CMakeLists.txt) that a forced old core is caught and named.
#include "kernels/cpu/openblas_core.h"

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "kernels/cpu/openblas_backend.h"

namespace switchyard::kernels {
namespace {

TEST(OpenBlasCore, KnowsTheIsaOfItsCores) {
  EXPECT_EQ(openblas_core_isa_level("Prescott"), 0);
  EXPECT_EQ(openblas_core_isa_level("Sandybridge"), 1);
  EXPECT_EQ(openblas_core_isa_level("HASWELL"), 2);
  EXPECT_EQ(openblas_core_isa_level("Zen"), 2);
  EXPECT_EQ(openblas_core_isa_level("SkylakeX"), 3);
  EXPECT_EQ(openblas_core_isa_level("Cooperlake"), 3);
}

TEST(OpenBlasCore, FlagsOnlyCoresBelowAvx2OnAvx2Cpus) {
  OpenBlasCoreCheck check{"Prescott", "SkylakeX", 0, 3};
  EXPECT_TRUE(check.too_old());
  EXPECT_NE(check.warning().find("OPENBLAS_CORETYPE=SkylakeX"), std::string::npos);
  EXPECT_NE(check.warning().find("Prescott"), std::string::npos);
  check.core_level = 2;  // AVX2 kernels on an AVX-512 CPU: close enough
  EXPECT_FALSE(check.too_old());
  EXPECT_EQ(check.warning(), "");
  EXPECT_FALSE((OpenBlasCoreCheck{"Prescott", "", 0, 0}.too_old()));
}

// With OPENBLAS_CORETYPE set before the library loaded, the check reads what OpenBLAS really
// runs; on an AVX2 or newer CPU a forced Prescott core must be reported with the fix.
TEST(OpenBlasCore, ReadsTheCoreOpenBlasRuns) {
  const OpenBlasCoreCheck check = check_openblas_core();
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  if (forced == nullptr) {
    EXPECT_FALSE(check.core.empty());
    GTEST_SKIP() << "OpenBLAS chose " << check.core << " itself";
  }
  EXPECT_EQ(check.core, forced);
  if (check.cpu_level < 2) GTEST_SKIP() << "this CPU has no AVX2: no core is too old";
  EXPECT_TRUE(check.too_old()) << check.core;
  EXPECT_EQ(check.recommended, cpu_isa_level() == 3 ? "SkylakeX" : "Haswell");
  EXPECT_NE(OpenBlasBackend<float>().describe().find("too old"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::kernels
