// On-disk cache of compiled kernels (cubin/PTX), keyed by the full compile key (source,
// options, NVRTC version, target arch). Entries are disk_cache.hpp's (atomic rename, the
// whole key and a checksum stored), so a hash collision or a corrupt/truncated file reads
// as a miss (and is rewritten), never as a wrong kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace thea::cuda {

class KernelCache {
 public:
  // `dir` empty: $THEA_CACHE_DIR/cuda, else $XDG_CACHE_HOME/thea/cuda, else ~/.cache/thea/cuda.
  // THEA_CACHE_DIR=off disables the cache.
  explicit KernelCache(std::string dir = {});

  bool enabled() const { return !dir_.empty(); }
  const std::string& dir() const { return dir_; }
  std::string path_for(const std::string& key) const;

  // The payload stored under `key`, or nullopt (missing, corrupt, or another key's entry).
  std::optional<std::string> load(const std::string& key) const;
  // Best effort: a read-only or full disk only costs a recompile next time.
  bool store(const std::string& key, const std::string& payload) const;

  static std::string default_dir();

 private:
  std::string dir_;
};

}  // namespace thea::cuda
