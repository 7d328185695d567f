// The on-disk entries every backend's kernel cache keeps (cpu shared objects, cuda cubins,
// the emulator's host builds). Lock-free between processes: an entry is written to a
// private temporary file and renamed into place, so a reader never sees a torn file. Each
// entry is the payload, then its full key, then a footer with sizes and checksums (a
// loader ignores trailing bytes, so a shared object stays loadable in place): a corrupt,
// truncated or colliding entry reads as a miss and is rebuilt, never as a wrong kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace thea::disk_cache {

std::uint64_t checksum64(const void* data, std::size_t n, std::uint64_t seed = 0);
// 128-bit hex digest (two seeded checksum64): entry file names, kernel name suffixes.
std::string digest128(const std::string& data);

// $THEA_CACHE_DIR, else $XDG_CACHE_HOME/thea, else $HOME/.cache/thea (/tmp/thea without a
// home); empty when THEA_CACHE_DIR is "off" or "0". Backends add their own subfolder.
std::string root_dir();
bool disabled_by_env();

// The whole file; false when it cannot be read.
bool read_file(const std::string& path, std::string& out);

// ".tmp.<pid>.<counter>.<random>": unique per process and call, so concurrent writers never
// share a temporary file.
std::string unique_suffix();

// Appends `key` and the footer to a payload file written by someone else (a compiler's
// output), then fsyncs it, ready to be renamed into place.
bool seal(const std::string& path, const std::string& key);
// The payload of the entry at `path` when it is complete and stored under exactly `key`.
std::optional<std::string> read(const std::string& path, const std::string& key);
bool valid(const std::string& path, const std::string& key);
// Writes a sealed entry through a temporary file and an atomic rename. Best effort: a
// read-only or full disk only costs a rebuild next time.
bool store(const std::string& path, const std::string& key, const std::string& payload);

}  // namespace thea::disk_cache
