#include "cuda/kernel_cache.hpp"

#include <filesystem>

#include "disk_cache.hpp"

namespace thea::cuda {

std::string KernelCache::default_dir() {
  const std::string root = disk_cache::root_dir();
  return root.empty() ? root : root + "/cuda";
}

KernelCache::KernelCache(std::string dir) : dir_(dir.empty() ? default_dir() : std::move(dir)) {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) dir_.clear();  // unusable: run uncached rather than fail
}

std::string KernelCache::path_for(const std::string& key) const {
  return dir_ + "/" + disk_cache::digest128(key) + ".bin";
}

std::optional<std::string> KernelCache::load(const std::string& key) const {
  if (!enabled()) return std::nullopt;
  return disk_cache::read(path_for(key), key);
}

bool KernelCache::store(const std::string& key, const std::string& payload) const {
  return enabled() && disk_cache::store(path_for(key), key, payload);
}

}  // namespace thea::cuda
