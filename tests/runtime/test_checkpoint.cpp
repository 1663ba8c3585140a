// Checkpoint shard files (runtime/checkpoint_file.h): round trip, and every kind of damage refused
// with a message naming the file and what is wrong; the atomic writes leave the previous file
// intact when stopped at any point.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "runtime/checkpoint_file.h"

namespace ck = switchyard::checkpoint;
namespace fs = std::filesystem;

namespace {

struct Crash {
  std::string point;
};

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sy-ckpt-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const std::vector<double> kA = {1.0, -2.5, 3.25, 1e-300, 7.0};
const std::vector<double> kB = {0.5, 0.25};

std::string write_shard(const std::string& path, uint64_t digest = 42, uint64_t id = 7) {
  ck::ShardWriter w(ck::DType::f64, digest, id);
  w.add("a", std::span<const double>(kA));
  w.add("experts.3.b", std::span<const double>(kB));
  w.write(path, ck::WritePoints({}, 0));
  return path;
}

// The message of the Error that opening and reading every tensor of path throws ("" if none).
std::string refusal(const std::string& path, ck::DType dtype = ck::DType::f64, uint64_t digest = 42,
                    uint64_t id = 7, int64_t expected_bytes = -1) {
  try {
    ck::ShardReader r(path, dtype, digest, id, expected_bytes);
    std::vector<double> a(kA.size()), b(kB.size());
    r.read("a", std::span<double>(a));
    r.read("experts.3.b", std::span<double>(b));
  } catch (const switchyard::Error& e) {
    return e.what();
  }
  return "";
}

void flip_byte(const std::string& path, std::streamoff offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset < 0 ? offset : offset, offset < 0 ? std::ios::end : std::ios::beg);
  char c = 0;
  f.read(&c, 1);
  f.seekp(offset, offset < 0 ? std::ios::end : std::ios::beg);
  c ^= 0x10;
  f.write(&c, 1);
}

}  // namespace

TEST(CheckpointFile, Crc32MatchesTheStandardCheckValue) {
  EXPECT_EQ(ck::crc32("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(ck::crc32("", 0), 0u);
  // Continued over pieces, the same as over the whole.
  EXPECT_EQ(ck::crc32("6789", 4, ck::crc32("12345", 5)), 0xCBF43926u);
}

TEST(CheckpointFile, RoundTripsNamedTensorsBitForBit) {
  TempDir dir;
  const std::string path = write_shard(dir.path() + "/s.bin");
  ck::ShardReader r(path, ck::DType::f64, 42, 7, static_cast<int64_t>(fs::file_size(path)));
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a", "experts.3.b"}));
  EXPECT_TRUE(r.has("a"));
  EXPECT_FALSE(r.has("c"));
  std::vector<double> a(kA.size()), b(kB.size());
  r.read("a", std::span<double>(a));
  r.read("experts.3.b", std::span<double>(b));
  EXPECT_EQ(a, kA);
  EXPECT_EQ(b, kB);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  std::vector<double> wrong(3);
  try {
    r.read("a", std::span<double>(wrong));
    FAIL() << "a wrong element count was accepted";
  } catch (const switchyard::Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 5 elements, the layer's has 3"), std::string::npos)
        << e.what();
  }
}

TEST(CheckpointFile, DamageIsRefusedNamingTheFileAndWhy) {
  TempDir dir;
  struct Case {
    const char* name;
    void (*damage)(const std::string&);
    const char* why;
  };
  const Case cases[] = {
      {"truncated", [](const std::string& p) { fs::resize_file(p, fs::file_size(p) - 3); },
       "truncated"},
      {"too short for a header", [](const std::string& p) { fs::resize_file(p, 20); },
       "shorter than the 64-byte header"},
      {"payload bit flip", [](const std::string& p) { flip_byte(p, -1); },
       "tensor 'experts.3.b' is corrupt (CRC32 mismatch)"},
      {"header bit flip", [](const std::string& p) { flip_byte(p, 30); },
       "corrupt header (CRC32 mismatch)"},
      {"index bit flip", [](const std::string& p) { flip_byte(p, 66); },
       "corrupt index (CRC32 mismatch)"},
      {"not a shard", [](const std::string& p) { std::ofstream(p) << std::string(200, 'x'); },
       "wrong magic bytes"},
      {"appended to", [](const std::string& p) { std::ofstream(p, std::ios::app) << "junk"; },
       "too long"},
  };
  for (const Case& c : cases) {
    const std::string path = write_shard(dir.path() + "/shard-" + std::to_string(&c - cases));
    c.damage(path);
    const std::string message = refusal(path);
    EXPECT_NE(message.find(path), std::string::npos) << c.name << ": " << message;
    EXPECT_NE(message.find(c.why), std::string::npos) << c.name << ": " << message;
  }
  const std::string path = write_shard(dir.path() + "/good");
  EXPECT_EQ(refusal(path), "");
  EXPECT_NE(refusal(path, ck::DType::f32).find("holds fp64 tensors, the layer is fp32"),
            std::string::npos);
  EXPECT_NE(refusal(path, ck::DType::f64, 43).find("belongs to another checkpoint"),
            std::string::npos);
  EXPECT_NE(refusal(path, ck::DType::f64, 42, 8).find("a file of another save"), std::string::npos);
  EXPECT_NE(refusal(path, ck::DType::f64, 42, 7, 10).find("the manifest says 10"),
            std::string::npos);
  EXPECT_NE(refusal(dir.path() + "/missing").find("cannot open"), std::string::npos);
}

TEST(CheckpointFile, AWriteStoppedAtAnyPointLeavesThePreviousFile) {
  TempDir dir;
  const std::string path = dir.path() + "/s.bin";
  write_shard(path);
  const auto before = fs::file_size(path);
  std::vector<std::string> points;
  {
    ck::ShardWriter w(ck::DType::f64, 99, 1);
    w.add("a", std::span<const double>(kA));
    w.add("b", std::span<const double>(kB));
    w.write(dir.path() + "/count.bin",
            ck::WritePoints([&](const std::string& p) { points.push_back(p); }, 0));
  }
  ASSERT_EQ(points.size(), 4u);  // create, half the payload, fsync, rename
  for (size_t k = 0; k < points.size(); ++k) {
    ck::ShardWriter w(ck::DType::f64, 99, 1);
    w.add("a", std::span<const double>(kA));
    w.add("b", std::span<const double>(kB));
    size_t seen = 0;
    try {
      w.write(path, ck::WritePoints(
                        [&](const std::string& p) {
                          if (seen++ == k) throw Crash{p};
                        },
                        0));
      FAIL() << "no crash at point " << k;
    } catch (const Crash&) {
    }
    EXPECT_EQ(fs::file_size(path), before) << points[k];
    EXPECT_EQ(refusal(path), "") << "after a crash before " << points[k];
  }
  // The same for the small files (manifest, latest).
  ck::write_file_atomic(dir.path() + "/latest", "step-1\n", ck::WritePoints({}, 0));
  for (int k = 0; k < 3; ++k) {
    int seen = 0;
    try {
      ck::write_file_atomic(dir.path() + "/latest", "step-2\n",
                            ck::WritePoints(
                                [&](const std::string& p) {
                                  if (seen++ == k) throw Crash{p};
                                },
                                0));
    } catch (const Crash&) {
    }
    EXPECT_EQ(ck::read_file(dir.path() + "/latest"), "step-1\n");
  }
}
