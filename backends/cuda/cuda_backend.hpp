// The CUDA backend objects. "cuda" runs on the GPU; the emulator variant runs the same
// lowering, generated kernels and program logic on the host (registered by tests and by
// users who want to debug codegen without a GPU: register_backend("cuda_emu", ...)).
#pragma once

#include <memory>

#include "thea/backend.hpp"

namespace thea {
std::shared_ptr<Backend> make_cuda_backend();
std::shared_ptr<Backend> make_cuda_emu_backend();
}  // namespace thea
