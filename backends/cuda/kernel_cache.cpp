#include "cuda/kernel_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace thea::cuda {
namespace {

constexpr char kMagic[8] = {'T', 'H', 'E', 'A', 'C', 'U', 'K', '1'};

struct Header {
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

std::string key_digest(const std::string& data) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx",
                static_cast<unsigned long long>(checksum64(data.data(), data.size(), 1)),
                static_cast<unsigned long long>(checksum64(data.data(), data.size(), 2)));
  return buf;
}

std::string KernelCache::default_dir() {
  std::string base = env_or_empty("THEA_CACHE_DIR");
  if (base == "off" || base == "0") return {};
  if (base.empty()) {
    std::string xdg = env_or_empty("XDG_CACHE_HOME");
    if (!xdg.empty()) {
      base = xdg + "/thea";
    } else {
      std::string home = env_or_empty("HOME");
      base = (home.empty() ? std::string("/tmp") : home + "/.cache") + "/thea";
    }
  }
  return base + "/cuda";
}

KernelCache::KernelCache(std::string dir) : dir_(dir.empty() ? default_dir() : std::move(dir)) {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) dir_.clear();  // unusable: run uncached rather than fail
}

std::string KernelCache::path_for(const std::string& key) const {
  return dir_ + "/" + key_digest(key) + ".bin";
}

std::optional<std::string> KernelCache::load(const std::string& key) const {
  if (!enabled()) return std::nullopt;
  std::ifstream in(path_for(key), std::ios::binary);
  if (!in) return std::nullopt;
  Header h{};
  if (!in.read(reinterpret_cast<char*>(&h), sizeof h)) return std::nullopt;
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.key_size != key.size() ||
      h.payload_size > (std::uint64_t{1} << 32))
    return std::nullopt;
  std::string stored_key(h.key_size, '\0');
  if (!in.read(stored_key.data(), static_cast<std::streamsize>(h.key_size))) return std::nullopt;
  if (stored_key != key) return std::nullopt;
  std::string payload(h.payload_size, '\0');
  if (!in.read(payload.data(), static_cast<std::streamsize>(h.payload_size))) return std::nullopt;
  if (in.peek() != std::char_traits<char>::eof()) return std::nullopt;  // trailing garbage
  if (checksum64(payload.data(), payload.size()) != h.payload_checksum) return std::nullopt;
  return payload;
}

bool KernelCache::store(const std::string& key, const std::string& payload) const {
  if (!enabled()) return false;
  std::string final_path = path_for(key);
  // Unique per process and call, so concurrent writers never share a temporary.
  static std::atomic<unsigned> counter{0};
  std::ostringstream tmp;
  tmp << final_path << ".tmp." << ::getpid() << "." << counter.fetch_add(1) << "."
      << std::random_device{}();
  std::string tmp_path = tmp.str();
  int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.key_size = key.size();
  h.payload_size = payload.size();
  h.payload_checksum = checksum64(payload.data(), payload.size());
  h.key_checksum = checksum64(key.data(), key.size());
  bool ok = write_all(fd, &h, sizeof h) && write_all(fd, key.data(), key.size()) &&
            write_all(fd, payload.data(), payload.size());
  ok = (::close(fd) == 0) && ok;
  if (ok) ok = ::rename(tmp_path.c_str(), final_path.c_str()) == 0;
  if (!ok) ::unlink(tmp_path.c_str());
  return ok;
}

}  // namespace thea::cuda
