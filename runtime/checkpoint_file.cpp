#include "runtime/checkpoint_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include <fmt/format.h>

#include "base/error.h"
#include "runtime/environment.h"

namespace switchyard::checkpoint {

namespace {

constexpr char kMagic[8] = {'S', 'Y', 'C', 'K', 'P', 'T', '\r', '\n'};
constexpr size_t kHeaderBytes = 64;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw Error(ErrorCode::invalid_argument, fmt::format("checkpoint file '{}': {}", path, why));
}

[[noreturn]] void fail_errno(const std::string& path, const std::string& what) {
  const int err = errno;
  throw Error(ErrorCode::invalid_argument,
              fmt::format("checkpoint file '{}': cannot {}: {}", path, what, std::strerror(err)));
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, "write");
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Reads exactly bytes at offset; false at end of file.
bool read_at(int fd, void* out, size_t bytes, uint64_t offset) {
  char* p = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

template <typename U>
void put(std::string& out, U v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(U));
}

template <typename U>
U get(const char* p) {
  U v;
  std::memcpy(&v, p, sizeof(U));
  return v;
}

std::string parent_of(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::atomic<int64_t> g_points{0};

}  // namespace

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < bytes; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "fp32";
    case DType::f64:
      return "fp64";
  }
  return "unknown";
}

WritePoints::WritePoints(CrashHook hook, int rank) : hook_(std::move(hook)), rank_(rank) {}

void WritePoints::operator()(const std::string& point) const {
  if (hook_) hook_(point);
  static const int64_t crash_after = environment::checkpoint_crash_after();
  if (crash_after <= 0) return;
  const std::optional<int> only = environment::checkpoint_crash_rank();
  if (only && *only != rank_) return;
  if (++g_points == crash_after) {
    std::fprintf(stderr,
                 "switchyard: SWITCHYARD_CHECKPOINT_CRASH_AFTER=%lld: rank %d crashes "
                 "before '%s'\n",
                 static_cast<long long>(crash_after), rank_, point.c_str());
    std::fflush(stderr);
    ::_exit(75);
  }
}

void fsync_directory(const std::string& dir) {
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY)};
  if (d.fd < 0) fail_errno(dir, "open the directory to fsync it");
  if (::fsync(d.fd) != 0 && errno != EINVAL) fail_errno(dir, "fsync the directory");
}

namespace {

// Makes a fully written temporary file the file at path: fsync, close, rename, fsync the folder,
// so that a crash at any point leaves the old file or the new one, never a part of one.
void publish(Fd& f, const std::string& tmp, const std::string& path, const WritePoints& points) {
  points("fsync " + tmp);
  if (::fsync(f.fd) != 0) fail_errno(tmp, "fsync");
  ::close(f.fd);
  f.fd = -1;
  points("rename " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail_errno(path, "rename the temporary file to");
  fsync_directory(parent_of(path));
}

}  // namespace

FileInfo ShardWriter::write(const std::string& path, const WritePoints& points) const {
  std::string index;
  uint64_t payload = 0;
  for (const Record& r : records_) {
    put<uint32_t>(index, static_cast<uint32_t>(r.name.size()));
    index += r.name;
    put<uint64_t>(index, payload);
    put<uint64_t>(index, r.bytes / (dtype_ == DType::f32 ? 4 : 8));
    put<uint32_t>(index, crc32(r.data, r.bytes));
    payload += r.bytes;
  }
  std::string header(kMagic, sizeof(kMagic));
  put<uint32_t>(header, kShardVersion);
  put<uint32_t>(header, static_cast<uint32_t>(dtype_));
  put<uint64_t>(header, digest_);
  put<uint64_t>(header, records_.size());
  put<uint64_t>(header, index.size());
  put<uint64_t>(header, payload);
  put<uint32_t>(header, crc32(index.data(), index.size()));
  put<uint64_t>(header, id_);
  put<uint32_t>(header, crc32(header.data(), header.size()));

  const std::string tmp = path + ".tmp";
  points("create " + tmp);
  Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (f.fd < 0) fail_errno(tmp, "create");
  uint32_t crc = crc32(header.data(), header.size());
  crc = crc32(index.data(), index.size(), crc);
  write_all(f.fd, header.data(), header.size(), tmp);
  write_all(f.fd, index.data(), index.size(), tmp);
  for (size_t i = 0; i < records_.size(); ++i) {
    // Halfway through the payload: a crash here leaves a truncated temporary file.
    if (i == records_.size() / 2) points("write the payload of " + tmp);
    write_all(f.fd, records_[i].data, records_[i].bytes, tmp);
    crc = crc32(records_[i].data, records_[i].bytes, crc);
  }
  publish(f, tmp, path, points);
  return {kHeaderBytes + index.size() + payload, crc};
}

ShardReader::ShardReader(std::string path, DType dtype, uint64_t digest, uint64_t id,
                         int64_t expected_bytes)
    : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail_errno(path_, "open");
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail_errno(path_, "stat");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  char h[kHeaderBytes];
  if (size < kHeaderBytes || !read_at(fd_, h, kHeaderBytes, 0)) {
    fail(path_,
         fmt::format("truncated: {} bytes, shorter than the {}-byte header", size, kHeaderBytes));
  }
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) {
    fail(path_, "not a switchyard checkpoint shard (wrong magic bytes)");
  }
  if (get<uint32_t>(h + kHeaderBytes - 4) != crc32(h, kHeaderBytes - 4)) {
    fail(path_, "corrupt header (CRC32 mismatch)");
  }
  const uint32_t version = get<uint32_t>(h + 8);
  if (version != kShardVersion) {
    fail(path_,
         fmt::format("format version {} is not the {} this build reads", version, kShardVersion));
  }
  const auto stored_dtype = static_cast<DType>(get<uint32_t>(h + 12));
  if (stored_dtype != dtype) {
    fail(path_, fmt::format("holds {} tensors, the layer is {}", dtype_name(stored_dtype),
                            dtype_name(dtype)));
  }
  const uint64_t stored_digest = get<uint64_t>(h + 16);
  if (stored_digest != digest) {
    fail(path_, fmt::format("config digest {:016x} differs from the manifest's {:016x}: the file "
                            "belongs to another checkpoint",
                            stored_digest, digest));
  }
  const uint64_t records = get<uint64_t>(h + 24);
  const uint64_t index_bytes = get<uint64_t>(h + 32);
  const uint64_t payload_bytes = get<uint64_t>(h + 40);
  const uint32_t index_crc = get<uint32_t>(h + 48);
  const uint64_t stored_id = get<uint64_t>(h + 52);
  if (stored_id != id) {
    fail(path_, fmt::format("belongs to checkpoint {:016x}, the manifest's is {:016x}: a file of "
                            "another save",
                            stored_id, id));
  }
  const uint64_t total = kHeaderBytes + index_bytes + payload_bytes;
  if (size != total) {
    fail(path_, fmt::format("{}: {} bytes, the header says {}",
                            size < total ? "truncated" : "too long", size, total));
  }
  if (expected_bytes >= 0 && size != static_cast<uint64_t>(expected_bytes)) {
    fail(path_, fmt::format("{} bytes, the manifest says {}: not the file this checkpoint wrote",
                            size, expected_bytes));
  }
  std::string index(index_bytes, '\0');
  if (!read_at(fd_, index.data(), index_bytes, kHeaderBytes)) fail(path_, "truncated index");
  if (crc32(index.data(), index.size()) != index_crc) fail(path_, "corrupt index (CRC32 mismatch)");
  elem_ = dtype == DType::f32 ? 4 : 8;
  size_t pos = 0;
  for (uint64_t i = 0; i < records; ++i) {
    if (pos + 4 > index.size()) fail(path_, "corrupt index (ends early)");
    const uint32_t len = get<uint32_t>(index.data() + pos);
    pos += 4;
    if (pos + len + 20 > index.size()) fail(path_, "corrupt index (ends early)");
    Entry e;
    e.name.assign(index.data() + pos, len);
    pos += len;
    e.offset = get<uint64_t>(index.data() + pos);
    e.count = get<uint64_t>(index.data() + pos + 8);
    e.crc = get<uint32_t>(index.data() + pos + 16);
    pos += 20;
    if (e.offset + e.count * elem_ > payload_bytes) {
      fail(path_, fmt::format("tensor '{}' lies outside the payload", e.name));
    }
    entries_.push_back(std::move(e));
  }
  payload_start_ = kHeaderBytes + index_bytes;
}

ShardReader::~ShardReader() {
  if (fd_ >= 0) ::close(fd_);
}

bool ShardReader::has(const std::string& name) const {
  for (const Entry& e : entries_) {
    if (e.name == name) return true;
  }
  return false;
}

std::vector<std::string> ShardReader::names() const {
  std::vector<std::string> out;
  for (const Entry& e : entries_) out.push_back(e.name);
  return out;
}

void ShardReader::read_bytes(const std::string& name, void* out, size_t count, size_t elem) const {
  const Entry* found = nullptr;
  for (const Entry& e : entries_) {
    if (e.name == name) found = &e;
  }
  if (found == nullptr) fail(path_, fmt::format("has no tensor '{}'", name));
  if (elem != elem_) fail(path_, "read with the wrong element size");
  if (found->count != count) {
    fail(path_,
         fmt::format("tensor '{}' has {} elements, the layer's has {}", name, found->count, count));
  }
  if (!read_at(fd_, out, count * elem, payload_start_ + found->offset)) {
    fail(path_, fmt::format("truncated in tensor '{}'", name));
  }
  if (crc32(out, count * elem) != found->crc) {
    fail(path_, fmt::format("tensor '{}' is corrupt (CRC32 mismatch)", name));
  }
}

void write_file_atomic(const std::string& path, const std::string& contents,
                       const WritePoints& points) {
  const std::string tmp = path + ".tmp";
  points("create " + tmp);
  Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (f.fd < 0) fail_errno(tmp, "create");
  write_all(f.fd, contents.data(), contents.size(), tmp);
  publish(f, tmp, path, points);
}

std::string read_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) fail_errno(path, "open");
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(f.fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno(path, "read");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace switchyard::checkpoint
