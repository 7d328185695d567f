// CUDA C++ for a plan's kernel steps. Each kernel is generic over sizes, strides and
// offsets (they arrive in its parameter block and the per-call argument block), so a
// function's kernels are generated and compiled once, whatever shapes it is called with.
#pragma once

#include <string>

#include "cuda/lower.hpp"
#include "thea/dtype.hpp"

namespace thea::cuda {

// Fills step.kernel and step.params for every kernel step and plan.source with the kernels
// (identical kernels are emitted once).
void render_kernels(Plan& plan);

// The whole translation unit for NVRTC or the emulator: prelude + kernel library + body.
std::string nvrtc_source(const std::string& body);
std::string emu_source(const std::string& body);

extern const char* const kKernelLib;
extern const char* const kEmuDevice;
extern const char* const kEmuAbi;

}  // namespace thea::cuda
