#include "cuda/launch.hpp"

#include <algorithm>

namespace thea::cuda {
namespace {
constexpr std::int64_t kMaxGridX = 2147483647;  // 2^31 - 1
}  // namespace

std::string LaunchConfig::str() const {
  return "grid (" + std::to_string(grid_x) + "," + std::to_string(grid_y) + "," +
         std::to_string(grid_z) + ") block (" + std::to_string(block_x) + "," +
         std::to_string(block_y) + "," + std::to_string(block_z) + ") smem " +
         std::to_string(shared_bytes);
}

std::int64_t floor_pow2(std::int64_t x) {
  std::int64_t p = 1;
  while (p * 2 <= x) p *= 2;
  return p;
}

std::int64_t ceil_pow2(std::int64_t x) {
  std::int64_t p = 1;
  while (p < x) p *= 2;
  return p;
}

LaunchConfig elementwise_config(std::int64_t n, const DeviceInfo& dev, int waves) {
  LaunchConfig c;
  const std::int64_t warp = dev.warp_size;
  std::int64_t block = std::min<std::int64_t>(256, dev.max_threads_per_block);
  if (n < block) block = std::max<std::int64_t>(warp, (n + warp - 1) / warp * warp);
  std::int64_t blocks_needed = std::max<std::int64_t>(1, (n + block - 1) / block);
  std::int64_t resident = std::max<std::int64_t>(1, dev.max_threads_per_sm / block) * dev.sm_count;
  std::int64_t grid = std::min({blocks_needed, resident * std::max(1, waves), kMaxGridX});
  c.block_x = static_cast<unsigned>(block);
  c.grid_x = static_cast<unsigned>(grid);
  return c;
}

LaunchConfig reduction_config(std::int64_t rows, std::int64_t row_len, bool contiguous,
                              const DeviceInfo& dev, int value_bytes, bool with_index) {
  LaunchConfig c;
  rows = std::max<std::int64_t>(rows, 1);
  row_len = std::max<std::int64_t>(row_len, 1);
  const std::int64_t warp = dev.warp_size;
  const std::int64_t max_block = std::min<std::int64_t>(1024, dev.max_threads_per_block);
  std::int64_t tx;
  if (!contiguous && rows >= warp) {
    tx = 1;  // a thread per segment: adjacent threads read adjacent columns
  } else {
    // About 4+ elements per thread, whole warps, at most one block per segment.
    tx = std::clamp<std::int64_t>(ceil_pow2((row_len + 3) / 4), warp, max_block);
    // Few long segments: use the whole block on each so the SMs stay busy.
    if (rows < dev.sm_count && row_len >= 4 * max_block) tx = max_block;
  }
  std::int64_t ty = std::max<std::int64_t>(1, 256 / tx);
  ty = std::min(ty, ceil_pow2(rows));
  std::int64_t blocks = (rows + ty - 1) / ty;
  c.block_x = static_cast<unsigned>(tx);
  c.block_y = static_cast<unsigned>(ty);
  if (blocks <= kMaxGridX) {
    c.grid_x = static_cast<unsigned>(blocks);
  } else {
    c.grid_x = static_cast<unsigned>(kMaxGridX);  // kernels loop over segments
  }
  const std::int64_t warps_per_row = (tx + warp - 1) / warp;
  const std::int64_t slot = value_bytes + (with_index ? 8 : 0);
  c.shared_bytes = warps_per_row > 1 ? static_cast<unsigned>(warps_per_row * ty * slot) : 0;
  return c;
}

}  // namespace thea::cuda
