// Lowering an optimized FunctionGraph to a CUDA plan: which nodes each kernel fuses (the
// shared schedule's loop kernels, sched::make_schedule), where each value lives (host
// scalar, device leaf, kernel output, view, or computed inside a kernel), and the ordered
// steps (fused kernels, cuBLAS gemms, copies) one call runs. Everything here
// is decided once per compiled function; sizes, strides and offsets are resolved per call
// (program.cpp), so one set of kernels serves every input shape.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "thea/fgraph.hpp"
#include "thea/schedule.hpp"

namespace thea::cuda {

enum class Place : std::uint8_t {
  Host,      // computed on the host every call: index arithmetic, slice bounds, sizes
  Input,     // a function argument uploaded to its own device buffer
  Shared,    // a shared variable: its device mirror
  Constant,  // uploaded once at compile time
  Buffer,    // written by a step into its own device buffer
  View,      // aliases `src` with other offset/shape/strides (dimshuffle, slicing, ...)
  Contig,    // `src` itself when contiguous at run time, else a copy of it
  Inline,    // computed inside its single consumer's kernel, never stored
};
const char* place_name(Place p);

struct Value {
  NodePtr node;
  Place place = Place::Buffer;
  int src = -1;          // View / Contig: the value read
  bool dynamic = false;  // pointer may change between calls of one shape: read from args
  int ptr_slot = -1;     // args slot holding the pointer (dynamic values)
  int scalar_slot = -1;  // Host values read by kernels: args slot with the value's bits
  bool is_output = false;
  int update_of = -1;       // the Shared value this is the new value of (-1: none)
  bool force_copy = false;  // Contig that must copy even when contiguous (aliases updated state)
  bool blas_alias = false;  // Contig for a gemm operand: aliases any cuBLAS-readable layout
  int group = -1;           // row group computing it (RowGroup steps), or -1
  std::vector<int> users;   // values whose computation reads this one

  // Whether the value's memory is dense row-major whenever it exists: its own buffer, or a
  // Contig that aliases its source only when the source is contiguous.
  bool contiguous_storage() const {
    return place == Place::Input || place == Place::Shared || place == Place::Constant ||
           place == Place::Buffer || (place == Place::Contig && !blas_alias);
  }
};

enum class StepKind : std::uint8_t {
  Map,        // fused elementwise kernel
  Reduce,     // sum/prod/max/min/mean over axes, fused input expression
  ArgReduce,  // argmax/argmin
  Softmax,    // row-wise softmax / log_softmax, fused input expression
  Xent,       // crossentropy_categorical_1hot
  XentGrad,   // its gradient
  OneHot,
  SoftmaxGrad,    // sm * (g - rowsum(g * sm))
  XentSoftmax,    // crossentropy_softmax from the logits (labels or float targets)
  XentSoftmaxDx,  // crossentropy_softmax_1hot_dx
  RowGroup,       // a fused row-wise subgraph: elementwise, row reductions, softmax, xent
  DotNaive,       // generated dot for integer / mixed dtypes
  Take,           // x[indices]: gathered rows, indices checked on the device
  IncRows,        // x with rows indices[k] += y[k]: x copied into the output, then the rows
                  // summed in index order (the reference's order, duplicates included)
  Gemm,           // cuBLAS
  Copy,           // strided copy into a contiguous buffer (Contig values)
  UpdateCopy,     // new value -> shared variable's buffer, after everything else
  HostOp,         // op->perform on the host: download inputs, run, upload (any other op)
  Loop,           // a loop kernel of the shared schedule
};
const char* step_kind_name(StepKind k);

// A value read by a kernel. `full`: same rank and broadcast pattern as the kernel's index
// space and contiguous, so it is indexed with the linear index.
struct Operand {
  int value = -1;
  bool full = false;
};

// One 8-byte word of a kernel's parameter block, resolved per call from run-time views.
struct ParamWord {
  enum class Kind : std::uint8_t {
    Const,        // c
    Numel,        // elements of `value`
    Dim,          // size of `value` along `axis`
    Stride,       // element stride of `value` along its own `axis`
    SpaceStride,  // stride of `value` along axis `axis` of a rank-`rank` index space it
                  // broadcasts to (0 on padded or size-1 axes)
    Prod,         // product of `value`'s sizes over `axes`
    Ptr,          // address of `value`'s element 0
    ErrWord,      // address of the program's error word
  } kind = Kind::Const;
  int value = -1;
  int axis = 0;
  int rank = 0;
  std::int64_t c = 0;
  std::vector<int> axes;
};

struct Step {
  StepKind kind = StepKind::Map;
  int out = -1;                // value written
  int target = -1;             // when writing in place: the Shared value whose buffer is used
  NodePtr node;                // the op node (Map: the root of the fused tree)
  std::vector<NodePtr> fused;  // inline nodes computed in this kernel, inputs before users
  std::vector<Operand> operands;
  std::string kernel;             // generated kernel name ("" for Gemm/UpdateCopy/HostOp)
  std::vector<ParamWord> params;  // the kernel's parameter block
  int index_rank = 0;             // rank of the kernel's index space
  int space = -1;                 // RowGroup: a value whose shape is the group's (N, C)
  bool contiguous_rows = false;   // Reduce/Softmax/ArgReduce: rows are contiguous in memory
  bool checks = false;            // may raise a device error (bad labels or row indices)
  bool try_dnn = false;           // Softmax: cuDNN when it loads (not THEA_CUDA_CUDNN=0)
  // Gemm: out = alpha * op(a).op(b) + beta * c_init  (c_init == -1: no accumulation).
  // alpha = `alpha` * (Host value alpha_scale) unless alpha_value names a device scalar
  // whose memory cuBLAS reads directly; beta likewise.
  int gemm_a = -1, gemm_b = -1, gemm_c = -1;
  bool trans_a = false, trans_b = false;
  double alpha = 1.0, beta = 0.0;
  int alpha_scale = -1, beta_scale = -1;
  int alpha_value = -1, beta_value = -1;
  int alpha_slot = -1, beta_slot = -1;  // args slots read by cuBLAS (device pointer mode)
  int ptr_slots = -1;                   // gemm_indirect: 3 consecutive slots with a, b, c pointers
  bool indirect = false;
  // Gemm with a small static column count (N <= kSkinnyGemmMaxN): a generated kernel instead
  // of cuBLAS. Operands are read through their views (a per-call slice's pointer comes from
  // the argument block), so no copy or pointer array is needed and the step is capturable.
  // operands = a, b[, c][, alpha value][, beta value]; params[skinny_mode_word] is patched
  // per instance with the kernel's layout mode (see skinny_gemm_config).
  bool skinny = false;
  int skinny_mode_word = -1;
  // RowGroup: a product (Dot, static C <= 32 columns) the kernel computes itself before each
  // row's sweeps, into shared memory (the value is Inline); gemm_a / gemm_b are its operands.
  int prologue = -1;
  // RowGroup: a float sum/mean over all of one per-row member, computed by the kernel (each
  // block adds its rows in order, the last block to finish adds the blocks' partials in
  // order); params[total_words] / [+1] are the per-instance partials and block counter.
  int total = -1;
  int total_words = -1;
  // Loop: the schedule's loop kernel (only the stores of values this plan keeps in buffers),
  // per access the value it reads or writes, and per runtime symbol of the schedule a
  // (value, axis) whose size it is. params[loop_scratch_words] / [+1]: the per-instance
  // partials of final reductions and the block counter (-1: no final reductions).
  std::shared_ptr<const sched::LoopKernel> loop;
  std::vector<int> loop_values;
  std::vector<std::pair<int, int>> loop_syms;
  int loop_scratch_words = -1;
};

// Largest static output column count the generated skinny gemm handles (one warp's lanes).
inline constexpr int kSkinnyGemmMaxN = 32;
// THEA_CUDA_SKINNY_GEMM=0 (or off): every float product goes to cuBLAS. Read at each
// lowering, so one process can compile both variants (the benchmark does).
bool skinny_gemm_enabled();
// THEA_CUDA_SKINNY_GEMM=nofuse: skinny kernels, but a row group's product stays a kernel of
// its own (by default the row kernel computes it: one launch less per training step).
bool skinny_fusion_enabled();
// THEA_CUDA_FUSE_TOTAL=0: a row group's sum/mean over all rows stays a reduce kernel.
bool row_total_fusion_enabled();
// Where the fused groups come from. By default (THEA_CUDA_LOWERING=schedule) from the shared
// schedule (sched::make_schedule, as the cpu backend's): its loop kernels become Loop steps,
// a row chain's leading product is computed by its loop's kernel, and every other node keeps
// its own step (cuBLAS or skinny products, gathers, host steps). THEA_CUDA_LOWERING=legacy
// keeps the backend's own row groups, for comparison on a GPU until they are retired; any
// other value is an error. Read at each lowering.
bool schedule_lowering_enabled();

struct Plan {
  std::vector<Value> values;
  std::unordered_map<const Node*, int> index;  // node -> value
  std::vector<int> host_order;                 // Host values in evaluation order
  std::vector<int> inputs;                     // per function input: its value
  std::vector<int> outputs;                    // per function output: its value
  std::vector<std::pair<int, int>> updates;    // (shared value, new value)
  std::vector<Step> steps;                     // in execution order
  int n_args = 0;                              // words in the per-call argument block
  bool any_checks = false;
  std::string source;  // generated kernels (codegen body)

  int value_of(const NodePtr& n) const { return index.at(n.get()); }
  std::size_t kernel_launches() const;
  std::string describe() const;
};

// Why the graph cannot run on the CUDA backend (empty when it can).
std::string unsupported_reason(const FunctionGraph& fg);

// Builds the plan (places, steps, args slots) and renders its kernels into plan.source.
Plan lower(const FunctionGraph& fg);

}  // namespace thea::cuda
