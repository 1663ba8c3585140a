#include "comm/bootstrap/store_bootstrap.h"

#include <fmt/format.h>

#include "comm/environment.h"
#include "comm/error.h"

namespace switchyard::comm {

namespace {

[[noreturn]] void bad(const std::string& message) {
  throw CommError(ErrorCode::invalid_argument, "store bootstrap: " + message);
}

}  // namespace

StoreOptions StoreOptions::resolved() const {
  StoreOptions o = *this;
  if (o.master_addr.empty()) o.master_addr = environment::master_addr();
  if (o.secret.empty()) o.secret = environment::job_secret();
  if (o.master_port == -1) o.master_port = environment::master_port();
  if (o.rank == -1) o.rank = environment::rank();
  if (o.world_size == -1) o.world_size = environment::world_size();
  if (o.local_rank == -1) o.local_rank = environment::local_rank();

  if (o.master_addr.empty()) bad("no store address: set MASTER_ADDR (rank 0's address)");
  if (o.world_size < 1) bad(fmt::format("world size {}: set WORLD_SIZE >= 1", o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size) {
    bad(fmt::format("rank {} outside [0, {}): set RANK", o.rank, o.world_size));
  }
  if (o.master_port < 0 || o.master_port > 65535 || (o.master_port == 0 && o.world_size > 1)) {
    bad(fmt::format("port {}: set MASTER_PORT (or SWITCHYARD_MASTER_PORT) to 1..65535",
                    o.master_port));
  }
  if (o.local_rank < -1) bad(fmt::format("local rank {} is negative", o.local_rank));
  if (o.secret.empty()) {
    bad("no job secret: set SWITCHYARD_JOB_SECRET to the same random string on every rank "
        "(e.g. from `openssl rand -hex 32`), so that only this job's ranks can join the store");
  }
  if (o.timeout.count() <= 0) bad(fmt::format("timeout {} ms must be positive", o.timeout.count()));
  return o;
}

StoreGroup::StoreGroup(const StoreOptions& options) : options_(options) {
  const auto port = static_cast<uint16_t>(options_.master_port);
  if (options_.rank == 0) {
    server_ = std::make_unique<TcpStoreServer>(options_.master_addr, port, options_.secret);
  }
  client_ = std::make_unique<TcpStoreClient>(
      options_.master_addr, server_ ? server_->port() : port, options_.secret, options_.timeout);
}

void StoreGroup::abandon_peers() {
  if (server_) server_->set_drain_timeout(std::chrono::milliseconds(0));
}

StoreGroup::~StoreGroup() {
  client_.reset();  // rank 0's own connection must not hold its server's drain open
  server_.reset();
}

std::vector<std::vector<std::byte>> StoreGroup::allgather(std::string_view name,
                                                          std::span<const std::byte> mine,
                                                          const std::function<void()>& idle) {
  const std::string prefix = fmt::format("{}/{}/", sequence_++, name);
  client_->set(prefix + std::to_string(rank()), mine);
  // One deadline for the whole collective, so that a missing rank costs one timeout, not one per
  // rank.
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  std::vector<std::vector<std::byte>> all(static_cast<size_t>(size()));
  for (int r = 0; r < size(); ++r) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    try {
      all[static_cast<size_t>(r)] = client_->get(
          prefix + std::to_string(r), std::max(left, std::chrono::milliseconds(1)), idle);
    } catch (const CommError& e) {
      if (e.code() != ErrorCode::timeout) throw;
      throw CommError(ErrorCode::timeout,
                      fmt::format("store {}: rank {} did not arrive within {} ms (it may have "
                                  "failed, or not started); {}",
                                  name, r, options_.timeout.count(), e.what()));
    }
  }
  return all;
}

void StoreGroup::barrier(std::string_view name, const std::function<void()>& idle) {
  allgather(name, {}, idle);
}

}  // namespace switchyard::comm
