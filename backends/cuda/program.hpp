// CudaProgram: runs a lowered plan on a Runtime. Per call it evaluates the host scalars,
// resolves every value's shape, strides and offset, finds (or builds) the instance for
// that shape signature — device buffers, kernel parameter blocks, launch configurations,
// a captured CUDA graph — fills the per-call argument block and replays the instance.
#pragma once

#include <memory>
#include <string>

#include "cuda/lower.hpp"
#include "cuda/runtime.hpp"
#include "thea/backend.hpp"
#include "thea/graph.hpp"

namespace thea::cuda {

// The device copy of a shared variable for one runtime (SharedState::mirror).
class CudaMirror : public DeviceMirror {
 public:
  CudaMirror(Runtime& rt, std::size_t nbytes);
  ~CudaMirror() override;
  void download(Tensor& host) override;
  void host_changed() override { device_valid_ = false; }

  Runtime& runtime() const { return rt_; }
  void* data() const { return buffer_.get(); }
  bool device_valid() const { return device_valid_; }
  void set_device_valid() { device_valid_ = true; }
  // The last stream that used this buffer and an event for ordering after that use.
  Stream last_stream = nullptr;
  Event last_event = nullptr;
  // last_event was not yet recorded after last_stream's latest use (done on demand).
  bool event_stale = false;

 private:
  Runtime& rt_;
  DeviceBuffer buffer_;
  bool device_valid_ = false;
};

struct ProgramStats {
  std::size_t calls = 0;
  std::size_t instances = 0;       // distinct shape signatures seen
  std::size_t graph_launches = 0;  // calls replayed as one graph
  // Of those, replays of a call key's own graph, which upload no argument block.
  std::size_t call_graph_launches = 0;
  std::size_t args_uploads = 0;  // argument blocks copied to the device
  std::size_t eager_calls = 0;
  double compile_seconds = 0;  // NVRTC (or cache load) for this program
  // Device memory of the instances held: their arenas, and what one buffer per
  // value would have taken (the arena reuses a dead value's bytes).
  std::int64_t arena_bytes = 0;
  std::int64_t unshared_bytes = 0;
  bool from_cache = false;
};

class CudaProgram : public Program {
 public:
  CudaProgram(Runtime& rt, const FunctionGraph& fg, Plan plan);
  ~CudaProgram() override;
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) override;
  std::size_t kernel_count() const override;
  std::string describe() const override;

  const Plan& plan() const { return plan_; }
  const ProgramStats& stats() const { return stats_; }

  struct Impl;

 private:
  Plan plan_;
  ProgramStats stats_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace thea::cuda
