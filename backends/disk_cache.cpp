#include "disk_cache.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace thea::disk_cache {
namespace {

constexpr char kMagic[8] = {'T', 'H', 'E', 'A', 'C', 'A', 'C', '1'};

struct Footer {
  char magic[8];
  std::uint64_t key_size;
  std::uint64_t payload_size;
  std::uint64_t payload_checksum;
  std::uint64_t key_checksum;
};

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

Footer footer_for(const std::string& key, const char* payload, std::size_t payload_size) {
  Footer f{};
  std::memcpy(f.magic, kMagic, sizeof kMagic);
  f.key_size = key.size();
  f.payload_size = payload_size;
  f.payload_checksum = checksum64(payload, payload_size);
  f.key_checksum = checksum64(key.data(), key.size());
  return f;
}

}  // namespace

std::uint64_t checksum64(const void* data, std::size_t n, std::uint64_t seed) {
  // FNV-1a over bytes, then a murmur3 finalizer to spread the bits.
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

std::string digest128(const std::string& data) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx",
                static_cast<unsigned long long>(checksum64(data.data(), data.size(), 1)),
                static_cast<unsigned long long>(checksum64(data.data(), data.size(), 2)));
  return buf;
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

bool disabled_by_env() {
  const std::string v = env_or_empty("THEA_CACHE_DIR");
  return v == "off" || v == "0";
}

std::string root_dir() {
  if (disabled_by_env()) return {};
  std::string base = env_or_empty("THEA_CACHE_DIR");
  if (!base.empty()) return base;
  const std::string xdg = env_or_empty("XDG_CACHE_HOME");
  if (!xdg.empty()) return xdg + "/thea";
  const std::string home = env_or_empty("HOME");
  return (home.empty() ? std::string("/tmp") : home + "/.cache") + "/thea";
}

std::string unique_suffix() {
  static std::atomic<unsigned> counter{0};
  std::ostringstream s;
  s << ".tmp." << ::getpid() << "." << counter.fetch_add(1) << "." << std::random_device{}();
  return s.str();
}

bool seal(const std::string& path, const std::string& key) {
  std::string payload;
  if (!read_file(path, payload)) return false;
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return false;
  const Footer f = footer_for(key, payload.data(), payload.size());
  bool ok = write_all(fd, key.data(), key.size()) && write_all(fd, &f, sizeof f);
  ok = (::fsync(fd) == 0) && ok;  // the rename that follows must publish complete data
  return (::close(fd) == 0) && ok;
}

std::optional<std::string> read(const std::string& path, const std::string& key) {
  std::string data;
  if (!read_file(path, data) || data.size() < sizeof(Footer)) return std::nullopt;
  Footer f{};
  std::memcpy(&f, data.data() + data.size() - sizeof f, sizeof f);
  if (std::memcmp(f.magic, kMagic, sizeof kMagic) != 0 || f.key_size != key.size() ||
      f.payload_size > data.size() || f.payload_size + f.key_size + sizeof f != data.size())
    return std::nullopt;
  if (data.compare(f.payload_size, f.key_size, key) != 0) return std::nullopt;
  if (checksum64(data.data(), f.payload_size) != f.payload_checksum) return std::nullopt;
  data.resize(f.payload_size);
  return data;
}

bool valid(const std::string& path, const std::string& key) { return read(path, key).has_value(); }

bool store(const std::string& path, const std::string& key, const std::string& payload) {
  const std::string tmp = path + unique_suffix();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const Footer f = footer_for(key, payload.data(), payload.size());
  bool ok = write_all(fd, payload.data(), payload.size()) &&
            write_all(fd, key.data(), key.size()) && write_all(fd, &f, sizeof f);
  ok = (::close(fd) == 0) && ok;
  if (ok) ok = ::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) ::unlink(tmp.c_str());
  return ok;
}

}  // namespace thea::disk_cache
