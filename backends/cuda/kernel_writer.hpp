// The writer every generated CUDA kernel is built with (codegen.cpp, loop_codegen.cpp): it
// collects the kernel's parameter words (sizes, strides and pointers resolved per call) and
// its body text. Internal to the cuda backend.
#pragma once

#include <sstream>
#include <string>
#include <utility>

#include "cuda/lower.hpp"
#include "thea/dtype.hpp"

namespace thea::cuda {

// Builds one kernel: collects parameter words and the body text.
class KernelWriter {
 public:
  KernelWriter(const Plan& plan, Step& step) : plan_(plan), step_(step) {}

  const Value& val(int i) const { return plan_.values[static_cast<std::size_t>(i)]; }
  Dtype dtype_of(int v) const { return val(v).node->type.dtype; }

  // Returns "p.w[k]" for a new parameter word.
  std::string word(ParamWord w) {
    step_.params.push_back(std::move(w));
    return "p.w[" + std::to_string(step_.params.size() - 1) + "]";
  }
  std::string word_const(std::int64_t c) { return word({ParamWord::Kind::Const, -1, 0, 0, c, {}}); }
  std::string word_dim(int v, int axis) { return word({ParamWord::Kind::Dim, v, axis, 0, 0, {}}); }
  std::string word_stride(int v, int axis) {
    return word({ParamWord::Kind::Stride, v, axis, 0, 0, {}});
  }
  std::string word_space_stride(int v, int axis, int rank) {
    return word({ParamWord::Kind::SpaceStride, v, axis, rank, 0, {}});
  }
  std::string word_prod(int v, std::vector<int> axes) {
    return word({ParamWord::Kind::Prod, v, 0, 0, 0, std::move(axes)});
  }
  std::string word_numel(int v) { return word({ParamWord::Kind::Numel, v, 0, 0, 0, {}}); }

  // Expression for the data pointer of value v, typed T* (const unless writable).
  std::string ptr(int v, bool writable = false) {
    const std::string t = std::string(writable ? "" : "const ") + dtype_c_type(dtype_of(v)) + "*";
    if (val(v).dynamic) return "((" + t + ")args[" + std::to_string(val(v).ptr_slot) + "])";
    return "((" + t + ")" + word({ParamWord::Kind::Ptr, v, 0, 0, 0, {}}) + ")";
  }
  // Kernel outputs are never views: a fresh buffer, a copy's own buffer, or (in place) the
  // shared variable's buffer, all fixed for an instance.
  std::string out_ptr() {
    int v = step_.target >= 0 ? step_.target : step_.out;
    const std::string t = std::string(dtype_c_type(val(step_.out).node->type.dtype)) + "*";
    return "((" + t + ")" + word({ParamWord::Kind::Ptr, v, 0, 0, 0, {}}) + ")";
  }

  // A Host scalar read from the argument block, as its own dtype.
  std::string host_scalar(int v) {
    Dtype d = dtype_of(v);
    std::string slot = std::to_string(val(v).scalar_slot);
    if (is_float(d))
      return "((" + std::string(dtype_c_type(d)) + ")thea_arg_f64(args, " + slot + "))";
    if (d == Dtype::Bool) return "(thea_arg_i64(args, " + slot + ") != 0)";
    return "((" + std::string(dtype_c_type(d)) + ")thea_arg_i64(args, " + slot + "))";
  }

  static std::string var(int v) { return "v" + std::to_string(v); }

  std::ostringstream body;
  const Plan& plan_;
  Step& step_;
};

// The smallest or largest value of an integer dtype, as code (identities of max and min).
inline std::string int_limit(Dtype d, bool max) {
  switch (d) {
    case Dtype::Bool:
      return max ? "1" : "0";
    case Dtype::UInt8:
      return max ? "255" : "0";
    case Dtype::Int32:
      return max ? "2147483647" : "(-2147483647 - 1)";
    default:
      return max ? "9223372036854775807LL" : "(-9223372036854775807LL - 1)";
  }
}

// A row kernel's product computed in the kernel (step.prologue = P = A . B, A and B in
// step.gemm_a / gemm_b, NC = P's static column count <= 32): the setup declares NC, the
// operands and the shared-memory regions (thea_tile, thea_gpart, then thea_smem for the
// sweeps' all-reduces); emit_row_product puts row `row` of P in thea_tile[threadIdx.y * NC +
// j] (every thread of the block calls it; `valid` says whether the row exists).
void emit_row_product_setup(KernelWriter& kw);
void emit_row_product(KernelWriter& kw, const std::string& row);

// Renders a StepKind::Loop step: a loop kernel of the shared schedule (loop_codegen.cpp).
void render_loop_kernel(KernelWriter& kw);

}  // namespace thea::cuda
