// The files of a checkpoint (docs/checkpoints.md): tensor shard files with a checked header and
// per-tensor CRC32s, atomic small-file writes (temporary name, fsync, rename, fsync of the
// directory), and the crash-injection points tests use to stop a save between any two writes.
// No collectives here; runtime/checkpoint.h composes these into a collective save and load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace switchyard::checkpoint {

// CRC-32 (IEEE 802.3, the polynomial of zlib and PNG), continued from crc.
uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

enum class DType : uint32_t { f32 = 1, f64 = 2 };
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
const char* dtype_name(DType dtype);  // "fp32" | "fp64"

// Called before every write, rename or removal a save makes, with a label naming it, so that a test
// can stop the save there (by throwing something that is not a std::exception, or by _exit). The
// environment variable SWITCHYARD_CHECKPOINT_CRASH_AFTER=n makes the process _exit(75) at its n-th
// point (counted from the process start; with SWITCHYARD_CHECKPOINT_CRASH_RANK=r only on the rank
// whose SaveOptions name it r), a crash at any moment for tests of whole programs.
using CrashHook = std::function<void(const std::string& point)>;

class WritePoints {
 public:
  WritePoints(CrashHook hook, int rank);
  void operator()(const std::string& point) const;

 private:
  CrashHook hook_;
  int rank_;
};

// A shard file: a 64-byte header (magic "SYCKPT\r\n", format version, dtype, config digest, record
// count, index and payload lengths, the index's CRC32, the id of the checkpoint it belongs to, the
// header's own CRC32), an index of named
// tensors (name, byte offset in the payload, element count, CRC32 of the tensor's bytes), then the
// payload. Little-endian.
inline constexpr uint32_t kShardVersion = 1;

struct FileInfo {
  uint64_t bytes = 0;
  uint32_t crc = 0;  // CRC32 of the whole file
};

class ShardWriter {
 public:
  ShardWriter(DType dtype, uint64_t digest, uint64_t id)
      : dtype_(dtype), digest_(digest), id_(id) {}
  // The tensor is not copied: data must stay valid and unchanged until write() returns.
  template <typename T>
  void add(const std::string& name, std::span<const T> data) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8);
    records_.push_back({name, data.data(), data.size_bytes()});
  }
  // Writes path + ".tmp", fsyncs it, renames it to path and fsyncs the directory. Throws
  // Error naming the file and the system's reason.
  FileInfo write(const std::string& path, const WritePoints& points) const;

 private:
  struct Record {
    std::string name;
    const void* data;
    size_t bytes;
  };
  DType dtype_;
  uint64_t digest_;
  uint64_t id_;
  std::vector<Record> records_;
};

class ShardReader {
 public:
  // Opens path and checks its header (magic, version, dtype, digest, checkpoint id), its length
  // (against the header, and against expected_bytes unless negative) and its index CRC. Throws
  // Error(invalid_argument) whose message names the file and what is wrong with it.
  ShardReader(std::string path, DType dtype, uint64_t digest, uint64_t id, int64_t expected_bytes);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  // Reads tensor `name` into out (whose size must be the stored count) and checks its CRC32.
  template <typename T>
  void read(const std::string& name, std::span<T> out) const {
    read_bytes(name, out.data(), out.size(), sizeof(T));
  }

 private:
  struct Entry {
    std::string name;
    uint64_t offset = 0;
    uint64_t count = 0;
    uint32_t crc = 0;
  };
  void read_bytes(const std::string& name, void* out, size_t count, size_t elem) const;

  std::string path_;
  int fd_ = -1;
  uint64_t payload_start_ = 0;
  size_t elem_ = 0;
  std::vector<Entry> entries_;
};

// Writes contents to path + ".tmp", fsyncs, renames to path, fsyncs the directory.
void write_file_atomic(const std::string& path, const std::string& contents,
                       const WritePoints& points);
std::string read_file(const std::string& path);  // throws Error naming the file
void fsync_directory(const std::string& dir);

}  // namespace switchyard::checkpoint
