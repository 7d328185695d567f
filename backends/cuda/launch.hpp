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

// The generated skinny gemm: out (m x n) = op(A) (m x k) . op(B) (k x n), n <= 32 columns
// held in registers. Mode 0 (A's rows run along the reduction, e.g. dot(X, w)): a block per
// output row, block_y warps splitting the reduction and 32 lanes striding it, warp shuffles
// then the warps' partials in order. Mode 1 (A's reduction stride is not 1 but its row
// stride is, e.g. X^T in w -= lr X^T G): a thread per output row, so adjacent threads read
// adjacent elements, block_y contiguous chunks of the reduction each, combined in chunk
// order. Every sum has a fixed order for given sizes: identical results run to run.
// shared_bytes holds the partials (value_bytes each).
struct SkinnyGemmLaunch {
  LaunchConfig cfg;
  int mode = 0;
};
SkinnyGemmLaunch skinny_gemm_config(std::int64_t m, std::int64_t k, std::int64_t n,
                                    std::int64_t a_row_stride, std::int64_t a_red_stride,
                                    const DeviceInfo& dev, int value_bytes);

// A row kernel that first computes its rows of a product P = A . B (rows x n, n <= 32, a
// reduction of k) itself: blockDim.x = 32 * kx threads per row split the reduction (kx
// warps when few rows), blockDim.y rows per block. shared_bytes covers, each rounded to
// 16 bytes, the rows of P (block_y * n values), the warps' partials (block_y * kx * n) and
// the row sweeps' all-reduce scratch (16 bytes per warp and row when kx > 1).
LaunchConfig row_group_gemm_config(std::int64_t rows, std::int64_t n, std::int64_t k,
                                   const DeviceInfo& dev, int value_bytes);

// A row kernel that also adds up one per-row value over all rows (a fused sum/mean):
// one double slot per row of a block after the all-reduce scratch (shared_bytes rounded up
// to 16 first), and at most 8 blocks per SM (a grid-stride loop covers more rows), since
// every block leaves a partial that the last one adds up.
void add_row_total(LaunchConfig& c, const DeviceInfo& dev);

// Largest power of two <= x (x >= 1), and smallest >= x.
std::int64_t floor_pow2(std::int64_t x);
std::int64_t ceil_pow2(std::int64_t x);

}  // namespace thea::cuda
