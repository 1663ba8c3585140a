#include "tests/metrics/metrics_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace switchyard::testing {

int connect_loopback(uint16_t port, int timeout_ms, const std::string& source) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  if (!source.empty()) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &local.sin_addr) != 1 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("bind to " + source + ": " + std::strerror(err));
    }
  }
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error(std::string("connect: ") + std::strerror(err));
  }
  return fd;
}

std::string read_to_end(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;  // closed, reset or timed out
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string http_exchange(uint16_t port, const std::string& request, const std::string& source) {
  const int fd = connect_loopback(port, 10000, source);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (and close) before reading everything
    sent += static_cast<size_t>(n);
  }
  std::string response = read_to_end(fd);
  ::close(fd);
  return response;
}

std::string http_get(uint16_t port, const std::string& path, const std::string& source) {
  return http_exchange(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", source);
}

int status_of(const std::string& response) {
  int status = 0;
  return std::sscanf(response.c_str(), "HTTP/1.%*d %d", &status) == 1 ? status : 0;
}

std::string body_of(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

std::string header_of(const std::string& response, const std::string& name) {
  std::istringstream in(response.substr(0, response.find("\r\n\r\n")));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::transform(key.begin(), key.end(), key.begin(), ::tolower);
    std::string want = name;
    std::transform(want.begin(), want.end(), want.begin(), ::tolower);
    if (key == want) return line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return "";
}

double Exposition::value(const std::string& name,
                         const std::map<std::string, std::string>& labels) const {
  const Sample* found = nullptr;
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      const auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (!match) continue;
    if (found != nullptr) throw std::runtime_error("more than one sample matches " + name);
    found = &s;
  }
  if (found == nullptr) throw std::runtime_error("no sample matches " + name);
  return found->value;
}

namespace {

bool metric_name(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  });
}

double parse_value(const std::string& v, const std::string& line) {
  if (v == "+Inf") return std::numeric_limits<double>::infinity();
  if (v == "-Inf") return -std::numeric_limits<double>::infinity();
  if (v == "NaN") return std::nan("");
  size_t used = 0;
  double out = 0;
  try {
    out = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) throw std::runtime_error("bad value in: " + line);
  return out;
}

Sample parse_sample(const std::string& line) {
  Sample s;
  size_t i = line.find_first_of("{ ");
  if (i == std::string::npos) throw std::runtime_error("no value in: " + line);
  s.name = line.substr(0, i);
  if (!metric_name(s.name)) throw std::runtime_error("bad metric name in: " + line);
  if (line[i] == '{') {
    ++i;
    while (line.at(i) != '}') {
      const size_t eq = line.find('=', i);
      if (eq == std::string::npos || line.at(eq + 1) != '"') {
        throw std::runtime_error("bad label in: " + line);
      }
      const std::string key = line.substr(i, eq - i);
      if (!metric_name(key)) throw std::runtime_error("bad label name in: " + line);
      std::string value;
      size_t j = eq + 2;
      for (; line.at(j) != '"'; ++j) {
        if (line[j] == '\\') {
          const char e = line.at(++j);
          if (e != '\\' && e != '"' && e != 'n') throw std::runtime_error("bad escape: " + line);
          value += e == 'n' ? '\n' : e;
        } else {
          value += line[j];
        }
      }
      if (!s.labels.emplace(key, value).second) throw std::runtime_error("label twice: " + line);
      i = j + 1;
      if (line.at(i) == ',') ++i;
    }
    ++i;
  }
  if (i >= line.size() || line[i] != ' ') throw std::runtime_error("no value in: " + line);
  std::istringstream rest(line.substr(i + 1));
  std::string value, timestamp, extra;
  rest >> value >> timestamp >> extra;
  if (!extra.empty()) throw std::runtime_error("trailing text in: " + line);
  s.value = parse_value(value, line);
  return s;
}

// The family a sample belongs to: histogram samples carry _bucket, _sum or _count.
std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string sfx = suffix;
    if (name.size() > sfx.size() && name.ends_with(sfx)) {
      const std::string base = name.substr(0, name.size() - sfx.size());
      const auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return name;
}

void check_histograms(const Exposition& e) {
  struct Series {
    std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
    double count = -1, sum = -1;
  };
  std::map<std::string, Series> series;  // family + labels without le
  for (const Sample& s : e.samples) {
    const std::string family = family_of(s.name, e.types);
    if (e.types.at(family) != "histogram") continue;
    auto labels = s.labels;
    labels.erase("le");
    std::string key = family;
    for (const auto& [k, v] : labels) key += "," + k + "=" + v;
    Series& h = series[key];
    if (s.name == family + "_bucket") {
      h.buckets.emplace_back(parse_value(s.labels.at("le"), s.name), s.value);
    } else if (s.name == family + "_count") {
      h.count = s.value;
    } else if (s.name == family + "_sum") {
      h.sum = s.value;
    } else {
      throw std::runtime_error("histogram " + family + " has a sample " + s.name);
    }
  }
  for (const auto& [key, h] : series) {
    if (h.buckets.empty() || h.count < 0 || h.sum < 0) {
      throw std::runtime_error(key + ": buckets, _count or _sum missing");
    }
    for (size_t i = 1; i < h.buckets.size(); ++i) {
      if (!(h.buckets[i].first > h.buckets[i - 1].first) ||
          h.buckets[i].second < h.buckets[i - 1].second) {
        throw std::runtime_error(key + ": buckets not cumulative in increasing le");
      }
    }
    if (!std::isinf(h.buckets.back().first) || h.buckets.back().second != h.count) {
      throw std::runtime_error(key + ": the +Inf bucket is missing or differs from _count");
    }
  }
}

}  // namespace

Exposition parse_prometheus(const std::string& text) {
  Exposition e;
  if (!text.empty() && text.back() != '\n') throw std::runtime_error("no final newline");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name, type;
      words >> hash >> kind >> name;
      if (kind == "TYPE") {
        words >> type;
        static const char* kTypes[] = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!metric_name(name) || std::find(std::begin(kTypes), std::end(kTypes), type) ==
                                      std::end(kTypes)) {
          throw std::runtime_error("bad TYPE line: " + line);
        }
        if (!e.types.emplace(name, type).second) throw std::runtime_error("TYPE twice: " + line);
      } else if (kind == "HELP" && !metric_name(name)) {
        throw std::runtime_error("bad HELP line: " + line);
      }
      continue;
    }
    Sample s = parse_sample(line);
    if (e.types.count(family_of(s.name, e.types)) == 0) {
      throw std::runtime_error("sample before its TYPE: " + line);
    }
    e.samples.push_back(std::move(s));
  }
  check_histograms(e);
  return e;
}

}  // namespace switchyard::testing
