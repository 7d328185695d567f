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

SkinnyGemmLaunch skinny_gemm_config(std::int64_t m, std::int64_t k, std::int64_t n,
                                    std::int64_t a_row_stride, std::int64_t a_red_stride,
                                    const DeviceInfo& dev, int value_bytes) {
  SkinnyGemmLaunch r;
  LaunchConfig& c = r.cfg;
  m = std::max<std::int64_t>(m, 1);
  k = std::max<std::int64_t>(k, 0);
  n = std::max<std::int64_t>(n, 1);
  const std::int64_t sms = std::max(1, dev.sm_count);
  // The kernels are written for 32-lane warps (shuffle offsets 16..1).
  constexpr std::int64_t kWarp = 32;
  r.mode = (a_row_stride == 1 && a_red_stride != 1 && m > 1) ? 1 : 0;
  std::int64_t tx, ty = 1, blocks;
  if (r.mode == 0) {
    tx = kWarp;
    // Few rows: split each row's reduction over up to 8 warps (~4+ elements per lane).
    if (m < 8 * sms)
      ty = std::clamp<std::int64_t>(floor_pow2(std::max<std::int64_t>(k / 128, 1)), 1, 8);
    blocks = std::min<std::int64_t>(m, 32 * sms);
  } else {
    tx = kWarp;
    if ((m + tx - 1) / tx >= 4 * sms) {
      tx = 128;  // enough rows to fill the device without splitting the reduction
    } else {
      ty = std::clamp<std::int64_t>(floor_pow2(std::max<std::int64_t>(k / 16, 1)), 1, 8);
      while (ty > 1 && ty * tx * n * value_bytes > 32768) ty /= 2;
    }
    blocks = (m + tx - 1) / tx;
  }
  c.block_x = static_cast<unsigned>(tx);
  c.block_y = static_cast<unsigned>(ty);
  c.grid_x = static_cast<unsigned>(std::min(blocks, kMaxGridX));
  const std::int64_t partials = r.mode == 0 ? ty * n : ty * tx * n;
  c.shared_bytes = ty > 1 ? static_cast<unsigned>(partials * value_bytes) : 0;
  return r;
}

LaunchConfig row_group_gemm_config(std::int64_t rows, std::int64_t n, std::int64_t k,
                                   const DeviceInfo& dev, int value_bytes) {
  LaunchConfig c;
  rows = std::max<std::int64_t>(rows, 1);
  n = std::max<std::int64_t>(n, 1);
  const std::int64_t sms = std::max(1, dev.sm_count);
  // Few rows (a minibatch): up to 4 warps per row shorten each row's serial reduction.
  std::int64_t kx = 1;
  if (rows < 8 * sms)
    kx = std::clamp<std::int64_t>(floor_pow2(std::max<std::int64_t>(k / 128, 1)), 1, 4);
  const std::int64_t tx = 32 * kx;
  std::int64_t ty = std::max<std::int64_t>(1, 256 / tx);
  ty = std::min(ty, ceil_pow2(rows));
  c.block_x = static_cast<unsigned>(tx);
  c.block_y = static_cast<unsigned>(ty);
  c.grid_x = static_cast<unsigned>(std::min((rows + ty - 1) / ty, kMaxGridX));
  auto round16 = [](std::int64_t b) { return (b + 15) / 16 * 16; };
  const std::int64_t tile = round16(ty * n * value_bytes);
  const std::int64_t partials = round16(ty * kx * n * value_bytes);
  const std::int64_t scratch = kx > 1 ? kx * ty * 16 : 0;
  c.shared_bytes = static_cast<unsigned>(tile + partials + scratch);
  return c;
}

void add_row_total(LaunchConfig& c, const DeviceInfo& dev) {
  const unsigned cap = static_cast<unsigned>(std::max(1, dev.sm_count) * 8);
  c.grid_x = std::max(1u, std::min(c.grid_x, cap));
  c.shared_bytes = (c.shared_bytes + 15u) / 16u * 16u + c.block_y * 8u;
}

}  // namespace thea::cuda
