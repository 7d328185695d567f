// Launch configurations chosen from run-time sizes and the device's properties. Pure
// host logic (unit-tested without a GPU); the kernels are written to be correct for any
// configuration these return (grid-stride loops, blockDim-generic reductions).
#pragma once

#include <cstdint>
#include <string>

#include "cuda/device.hpp"

namespace thea::cuda {

struct LaunchConfig {
  unsigned grid_x = 1, grid_y = 1, grid_z = 1;
  unsigned block_x = 1, block_y = 1, block_z = 1;
  unsigned shared_bytes = 0;
  std::uint64_t threads() const {
    return std::uint64_t{grid_x} * grid_y * grid_z * block_x * block_y * block_z;
  }
  std::string str() const;  // "grid (4,1,1) block (256,1,1) smem 0"
  bool operator==(const LaunchConfig&) const = default;
};

// Pointwise kernels over n elements with a grid-stride loop: 256-thread blocks (fewer for
// tiny n, rounded to whole warps), at most enough blocks to fill every SM `waves` times.
LaunchConfig elementwise_config(std::int64_t n, const DeviceInfo& dev, int waves = 4);

// Reductions of `rows` independent segments of `row_len` elements each. blockDim.x
// threads cooperate on one segment (a warp or more, reduced with shuffles and shared
// memory), blockDim.y segments share a block. `contiguous` says consecutive elements of a
// segment are adjacent in memory; when they are not (a column sum), one thread per
// segment keeps the warp's loads coalesced across segments instead.
// shared_bytes covers the cross-warp partials for `value_bytes`-sized values (plus an
// int64 index for arg-reductions when `with_index`).
LaunchConfig reduction_config(std::int64_t rows, std::int64_t row_len, bool contiguous,
                              const DeviceInfo& dev, int value_bytes = 8, bool with_index = false);

// Largest power of two <= x (x >= 1), and smallest >= x.
std::int64_t floor_pow2(std::int64_t x);
std::int64_t ceil_pow2(std::int64_t x);

}  // namespace thea::cuda
