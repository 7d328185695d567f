// A small SIMT emulator: runs a kernel compiled for the host over a grid, one coroutine per
// CUDA thread, honouring __syncthreads and warp-synchronous shuffles. Blocks run one after
// another. A barrier some threads never reach (divergent __syncthreads) is reported as an
// error instead of hanging, which is stricter than real hardware.
#pragma once

#include <cstdint>

#include "cuda/emu_abi.h"
#include "cuda/launch.hpp"

namespace thea::cuda {

// The hooks a kernel shared object must be bound to (thea_emu_bind) before running.
const thea_emu_hooks* simt_hooks();

// Runs entry(params, args) for every thread of the grid. Throws Error on deadlock.
void simt_run(const LaunchConfig& cfg, thea_emu_entry entry, const std::int64_t* params,
              const std::int64_t* args);

}  // namespace thea::cuda
