// The cpu backend's compiled function body: the schedule's kernels (generated code loaded
// from the kernel cache, OpenBLAS calls, host steps) run over an arena laid out once per input
// shape, so repeated calls with the same shapes allocate nothing but the returned outputs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "compiler.hpp"
#include "profiler.hpp"
#include "render.hpp"
#include "thea/backend.hpp"
#include "thea/memplan.hpp"
#include "thea/schedule.hpp"
#include "thread_pool.hpp"

namespace thea::cpu {

struct CompileInfo {
  double seconds = 0;
  bool cache_hit = false;
  std::string library_path;
};

class CpuProgram : public Program {
 public:
  CpuProgram(const FunctionGraph& fg, sched::Schedule schedule, sched::MemPlan plan,
             Rendered rendered, std::shared_ptr<SharedLibrary> library, CompileInfo info);
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) override;
  // Launches per call: a row chain's members count once.
  std::size_t kernel_count() const override;
  std::string describe() const override;

  const sched::Schedule& schedule() const { return schedule_; }
  const sched::MemPlan& memplan() const { return plan_; }
  const CompileInfo& compile_info() const { return info_; }
  // Parts each kernel was split into at the last layout (tests).
  const std::vector<int>& parts() const { return nparts_; }
  std::int64_t arena_bytes() const { return arena_size_; }

 private:
  struct KernelFns {
    PartFn fn = nullptr;
    FinishFn finish = nullptr;
    PrepFn prep = nullptr;
    CombineFn combine = nullptr;
  };
  void plan_shapes(const std::vector<Tensor>& inputs);
  bool value_shapes_unchanged() const;
  void evaluate_values(const std::vector<Tensor>& inputs);
  Tensor buffer_tensor(int b);
  void run_kernel(std::size_t k);
  void set_rows_ahead(std::size_t k);
  void find_borrowed_views();
  void run_blas(std::size_t k);
  void* bind_transposed(SharedState& s);
  void run_host(std::size_t k);

  std::vector<NodePtr> order_;
  std::vector<NodePtr> inputs_;
  sched::Schedule schedule_;
  sched::MemPlan plan_;
  Rendered rendered_;
  std::shared_ptr<SharedLibrary> library_;
  CompileInfo info_;
  std::vector<KernelFns> fns_;
  std::vector<int> root_;  // storage owner of each buffer
  ThreadPool* pool_;

  // Values that shapes depend on (slice bounds), evaluated on the host before planning.
  std::vector<NodePtr> value_nodes_;
  std::vector<const Node*> value_consumers_;  // nodes whose shape depends on such values
  std::unordered_map<const Node*, Tensor> values_;
  bool has_value_shapes_ = false;
  std::unordered_map<const Node*, Shape> last_shapes_;  // of the current layout

  // Layout for the current input shapes.
  bool planned_ = false;
  std::vector<Shape> signature_;
  std::vector<std::string> value_signature_;
  std::vector<std::int64_t> dims_;  // runtime symbol values
  std::vector<Shape> buffer_shapes_;
  std::vector<int> nparts_;
  std::shared_ptr<Storage> arena_;
  std::int64_t arena_size_ = 0;
  std::vector<std::int64_t> arena_offset_;
  std::vector<void*> ptrs_;                        // P: storage of every buffer
  std::vector<unsigned char> partials_;            // final-reduction partials
  std::vector<std::shared_ptr<Storage>> scratch_;  // per kernel (packed gemm operands)
  std::vector<Tensor> constants_;                  // dense copies of constant buffers
  std::vector<Tensor> outputs_now_;                // this call's output tensors (per buffer)
  std::vector<Tensor> staged_inputs_;              // dense copies of strided inputs
  std::vector<const Tensor*> input_refs_;          // this call's inputs (dense)
  std::vector<Tensor> host_values_;                // host-step results (per buffer)
  std::vector<bool> borrowed_;  // host views handed to kernels without a copy (per buffer)
  // Shared matrices a chain keeps transposed between calls (per buffer; see bind_transposed).
  std::vector<bool> keep_transposed_;

  // Per kernel: whether splitting across the pool's threads actually pays off right now.
  // Both ways are timed now and then and the faster one is used (the machine is shared: a
  // second thread helps when a core is free and hurts when it is not). Parts are the same
  // either way, so results do not change.
  struct Adapt {
    double par = 0, solo = 0;  // smoothed seconds per launch
    int n_par = 0, n_solo = 0;
    std::uint64_t launches = 0;
    int trial = 0;  // launches left in a trial of the other way
    bool trial_solo = false;
    bool last_solo = true;
  };
  std::vector<Adapt> adapt_;
  void launch(std::size_t k, ThreadPool::PartFn fn, void* ctx);

  std::shared_ptr<FunctionProfile> profile_;
};

}  // namespace thea::cpu
