// Test side of the metrics endpoint: a blocking loopback HTTP client (every read bounded, so a test
// that goes wrong fails instead of hanging) and a strict parser of Prometheus text format 0.0.4.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace switchyard::testing {

// A connected loopback socket whose reads and writes give up after timeout_ms. Throws on failure.
// source: the local address to connect from (any of 127.0.0.0/8, so that a test can play several
// client hosts), or "" for the kernel's choice.
int connect_loopback(uint16_t port, int timeout_ms = 10000, const std::string& source = "");
// Reads until the peer closes (or the timeout): "" when the server closed without answering.
std::string read_to_end(int fd);
// Sends request as is and returns the whole response.
std::string http_exchange(uint16_t port, const std::string& request,
                          const std::string& source = "");
std::string http_get(uint16_t port, const std::string& path = "/metrics",
                     const std::string& source = "");
// Status code of a raw response, 0 when there is none.
int status_of(const std::string& response);
std::string body_of(const std::string& response);
std::string header_of(const std::string& response, const std::string& name);

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter | gauge | histogram | ...
  std::vector<Sample> samples;

  // The one sample named name whose labels include every given one; throws if not exactly one.
  double value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
};

// Parses text, checking: line syntax (HELP, TYPE, samples with quoted labels and float values),
// one TYPE per family and before its samples, and for every histogram series cumulative buckets
// in increasing `le`, a +Inf bucket equal to _count, and a _sum. Throws std::runtime_error naming
// the line or series otherwise.
Exposition parse_prometheus(const std::string& text);

}  // namespace switchyard::testing
