// The schedule: an optimized FunctionGraph lowered to a backend-neutral list of kernels.
// Each kernel is either a fused loop nest over elementwise and reduction nodes (a LoopKernel:
// a small scalar expression DAG over an iteration domain), a dense product (a GemmKernel,
// rendered by a backend as generated code or a library call), or a host step that runs the
// op's reference perform(). Buffers are the values that cross kernel boundaries; the memory
// plan (memplan.hpp) decides where each one lives. Renderers (cpu, cuda) only read this.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "thea/fgraph.hpp"
#include "thea/ops/ops.hpp"

namespace thea::sched {

// A dimension: a static size, or a symbol bound at run time. Dimensions that the graph's ops
// force to be equal (the rows of X and of dot(X, w), ...) share one symbol.
struct Dim {
  std::int64_t size = -1;  // >= 0: static
  int sym = -1;            // runtime symbol, when size < 0
  bool is_static() const { return size >= 0; }
  bool operator==(const Dim& o) const { return size == o.size && sym == o.sym; }
  bool operator!=(const Dim& o) const { return !(*this == o); }
};
std::string dim_str(const Dim& d);                // "784" or "d0"
std::string dims_str(const std::vector<Dim>& d);  // "(d0, 10)"

enum class BufferKind : std::uint8_t {
  Input,     // a function argument (the Program makes non-contiguous ones contiguous)
  Shared,    // a shared variable's storage
  Constant,  // a graph constant (contiguous copy held by the Program)
  Temp,      // produced by a kernel
  View,      // another buffer's storage seen with other dims/axis order (no data movement)
};

// A value that lives in memory. All buffers are dense row-major except Views with a
// permuted axis order (axis_map), which only loop and gemm kernels read.
struct Buffer {
  int id = -1;
  BufferKind kind = BufferKind::Temp;
  NodePtr node;  // the graph value it holds
  Dtype dtype = Dtype::Float32;
  std::vector<Dim> dims;
  int input = -1;  // Input: position in fg.inputs()
  // View: the viewed buffer; view axis k is base axis axis_map[k] (-1: a new size-1 axis).
  // `reinterpret` views (reshape) keep the base's element order with new dims instead.
  int base = -1;
  std::vector<int> axis_map;
  bool reinterpret = false;
  int producer = -1;  // kernel that writes it (Temp), or -1
};

// How a loop kernel reads or writes a buffer: for each domain axis, the buffer axis that
// moves with it, or -1 when the buffer is broadcast along it.
struct Access {
  int buffer = -1;
  std::vector<int> axis_of;  // size = domain rank
};

enum class ExprKind : std::uint8_t {
  Load,       // access `access` at the current loop point (or at `index_args` positions)
  Const,      // literal `value`
  Scalar,     // scalar_op(args...) computed in `compute` dtype
  Reduce,     // reduction of args[0]; `final`: over the whole iteration, else over inner axes
  ArgReduce,  // index of the max/min of args[0] along the inner axis (int64)
  Index,      // the loop index along domain axis `axis`, as int64
  Count,      // product of the sizes of domain axes `axes`, in `dtype`
};

struct Expr {
  ExprKind kind = ExprKind::Const;
  Dtype dtype = Dtype::Float32;  // of the value
  std::vector<int> args;         // expression ids (all smaller than this one)
  // Load
  int access = -1;
  // For a gather (x[i, y[i]]): per domain axis an expression giving the index to read at
  // instead of the loop index, or -1. Empty when none.
  std::vector<int> index_args;
  // Const
  double value = 0;
  // Scalar
  ScalarOp op = ScalarOp::Identity;
  Dtype compute = Dtype::Float32;  // args are converted to this, then the functor runs
  std::vector<bool> convert;       // per arg: converted to `compute` (Switch's condition is not)
  // Reduce / ArgReduce
  ReduceKind reduce = ReduceKind::Sum;  // Sum, Prod, Max, Min (Mean is lowered to Sum / Count)
  bool final = false;
  bool is_max = true;            // ArgReduce
  Dtype accum = Dtype::Float32;  // accumulator dtype (float64 for float32 sums, as perform does)
  // Index / Count
  int axis = -1;
  std::vector<int> axes;
  // Filled by the scheduler: 0 loop-invariant (before the loop), 1 outer, 2 inner,
  // 3 after the loop (depends on a final reduction).
  int level = 0;
  // Inner values: the inner pass that computes them. Outer values: the first pass after
  // which they are known (0 = before the first pass).
  int phase = 0;
  NodePtr node;  // the graph node whose value this is, when it is one

  // Whether computing this value reads argument `i`: second(x, y) is y broadcast to x's
  // shape, so x only gives its level and is never read (renderers print y alone).
  bool reads_arg(std::size_t i) const {
    return !(kind == ExprKind::Scalar && op == ScalarOp::Second && i == 0);
  }
};

struct Store {
  int expr = -1;
  int access = -1;
};

// A fused loop nest over `domain`. Axes with inner[d] are reduced by the kernel's inner
// reductions (all of them reduce the same axes); the others are outer axes, split across
// threads. For each outer point the kernel runs `passes` sweeps over the inner axes
// (softmax: max, then sum of exp, then the normalised values). Contract with the memory
// plan: renderers store inner values during the last pass and outer values after all
// passes, so a value written in place over an input never overwrites an element before the
// kernel's last read of it.
struct LoopKernel {
  std::vector<Dim> domain;
  std::vector<bool> inner;
  std::vector<Access> accesses;
  std::vector<Expr> exprs;
  std::vector<Store> stores;
  int passes = 1;
  bool has_final = false;  // final reductions: partial results per part, combined in order
};

// C = alpha * op(A) · op(B) [+ beta * C_in], matrices given as buffers (vectors are n x 1 or
// 1 x n views). Scalars are literals or 0-d buffers.
struct ScalarArg {
  bool is_const = true;
  double value = 0;
  int buffer = -1;
};
struct GemmKernel {
  int a = -1, b = -1;  // buffers; rank 1 or 2
  int c_in = -1;       // accumulate: the buffer added (beta * C_in); -1 otherwise
  int out = -1;        // buffer written
  bool trans_a = false, trans_b = false;
  bool a_vector = false, b_vector = false;  // dot with vector operands
  ScalarArg alpha{true, 1.0, -1};
  ScalarArg beta{true, 0.0, -1};
  Dtype dtype = Dtype::Float32;
  Dim m, n, k;  // C is m x n, the reduction is over k
};

struct HostKernel {
  NodePtr node;             // whose op->perform runs
  std::vector<int> inputs;  // buffers, one per node input
  int out = -1;
};

enum class KernelKind : std::uint8_t { Loop, Gemm, Host };

struct Kernel {
  KernelKind kind = KernelKind::Loop;
  std::string name;            // "k0_loop", "k1_gemm", ...
  std::vector<NodePtr> nodes;  // graph nodes it computes (for printing and tests)
  std::vector<int> reads;      // buffers read
  std::vector<int> writes;     // buffers written
  LoopKernel loop;
  GemmKernel gemm;
  HostKernel host;
};

// Consecutive kernels a backend may run as one pass over the rows of a product's left
// operand A, each part of the rows going through every member before the next part: the
// product C = A·B (rows of A split), a loop whose outer axis is exactly C's rows (softmax,
// cross-entropy, argmax over each row), and optionally the product that reduces over those
// same rows, out = alpha·Aᵀ·D + beta·C_in with D written by the loop (the weight gradient).
// The rows of A are read from memory once instead of twice, and the launch count drops from
// three to one. The last product is summed per part and the parts combined in part order
// after every part is done, so it only ever writes `out` after all reads of its old value.
struct RowChain {
  int gemm = -1;         // C = alpha·A·B: not transposed, no C_in
  int loop = -1;         // row-local loop over C's rows
  int reduce_gemm = -1;  // out = alpha·Aᵀ·D + beta·C_in, or -1
};

struct ScheduleOptions {
  bool fuse = true;  // false: one kernel per node (for tests and debugging)
  // Ops lowered to GemmKernel; the others run as host steps.
  bool use_gemm = true;
};

struct Schedule {
  std::vector<Buffer> buffers;
  std::vector<Kernel> kernels;      // in execution order
  std::vector<int> outputs;         // buffer per fg.outputs()
  std::vector<int> update_targets;  // Shared buffer per fg.updates()
  std::vector<int> update_values;   // buffer holding each update's new value
  int num_syms = 0;
  // For each runtime symbol, a (node, axis) whose runtime size defines it.
  std::vector<std::pair<NodePtr, int>> sym_sources;
  // Every node's dims as the kernels assume them; the Program checks them against the
  // run-time shapes (a mismatch is the user's shape error, reported before any kernel runs).
  std::vector<std::pair<NodePtr, std::vector<Dim>>> node_dims;

  // Kernel groups a backend may launch as one (see RowChain); kernels stay listed above.
  std::vector<RowChain> row_chains;
  std::string describe() const;
  std::size_t kernel_count() const { return kernels.size(); }
};

// Lowers an optimized graph. Never fails on an unknown op: it becomes a host step.
Schedule make_schedule(const FunctionGraph& fg, const ScheduleOptions& options = {});

// The loop kernel's pass plan rendered as text (tests and THEA_DEBUG=schedule).
std::string describe_loop(const Schedule& s, const Kernel& k);

}  // namespace thea::sched
