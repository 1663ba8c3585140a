// reuse_freed_buffers: large buffers come from the heap and stay there when freed, unless the
// environment says to leave malloc alone. Each test runs in its own process (tests/runtime/
// CMakeLists.txt) with the environment it names, since the setting is per process and once only.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstring>
#include <memory>
#include <string>

#include "base/error.h"
#include "runtime/buffer_reuse.h"

namespace sy = switchyard;

namespace {

constexpr size_t kBufferBytes = 40u << 20;  // above glibc's largest automatic mmap threshold

struct HeapUse {
  size_t mapped = 0;  // in blocks mmapped for single allocations
  size_t free = 0;    // kept in the heap for reuse
};

HeapUse heap_use() {
  const struct mallinfo2 info = mallinfo2();
  return {info.hblkhd, info.fordblks};
}

// Allocates and touches a large buffer, frees it, and reports the heap use while it was live and
// after it was freed.
std::pair<HeapUse, HeapUse> allocate_and_free_a_large_buffer() {
  auto buffer = std::make_unique<char[]>(kBufferBytes);
  std::memset(buffer.get(), 1, kBufferBytes);
  const HeapUse live = heap_use();
  buffer.reset();
  return {live, heap_use()};
}

}  // namespace

// Default environment.
TEST(BufferReuse, LargeBuffersStayInTheHeapForTheNextCall) {
  const HeapUse before = heap_use();
  ASSERT_TRUE(sy::reuse_freed_buffers());
  EXPECT_NE(std::string(sy::buffer_reuse_description()).find("kept for reuse"), std::string::npos);
  const auto [live, freed] = allocate_and_free_a_large_buffer();
  EXPECT_EQ(live.mapped, before.mapped) << "the buffer was mmapped, not taken from the heap";
  EXPECT_GE(freed.free, kBufferBytes) << "the freed buffer went back to the system";
}

// SWITCHYARD_MALLOC_REUSE=0.
TEST(BufferReuse, LeftToGlibcWhenTheEnvironmentSaysSo) {
  const HeapUse before = heap_use();
  EXPECT_FALSE(sy::reuse_freed_buffers());
  EXPECT_NE(std::string(sy::buffer_reuse_description()).find("SWITCHYARD_MALLOC_REUSE=0"),
            std::string::npos);
  const auto [live, freed] = allocate_and_free_a_large_buffer();
  EXPECT_GE(live.mapped, before.mapped + kBufferBytes) << "glibc maps a buffer this large";
  EXPECT_LT(freed.free, kBufferBytes);
}

// SWITCHYARD_MALLOC_REUSE=yes.
TEST(BufferReuse, AnUnknownSettingIsRefusedNamingTheVariable) {
  try {
    sy::reuse_freed_buffers();
    FAIL() << "accepted SWITCHYARD_MALLOC_REUSE=yes";
  } catch (const sy::Error& e) {
    EXPECT_EQ(e.code(), sy::ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("SWITCHYARD_MALLOC_REUSE must be 0"), std::string::npos)
        << e.what();
  }
}
