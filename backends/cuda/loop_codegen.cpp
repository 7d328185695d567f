// CUDA rendering of the shared schedule's loop kernels (sched::LoopKernel), the groups the
// cpu renderer fuses, printed with the same scalar functors. The kernel's outer points are
// spread over the grid: without inner axes one thread per point (grid-stride); with inner
// axes a segment of blockDim.x threads per point and blockDim.y points per block, each pass
// a strided sweep of the inner points followed by segment all-reduces (a fixed order, so
// results repeat run to run). Final reductions are summed per thread, per block in thread
// order, then across blocks in block order by the last block to finish, which also computes
// the values after the loop. Stores follow the schedule's contract: inner values in the last
// pass, outer values after every pass, so a value written in place is never read back.
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cuda/kernel_writer.hpp"
#include "thea/error.hpp"
#include "thea/ops/scalar.hpp"

namespace thea::cuda {
namespace {

using sched::Dim;
using sched::Expr;
using sched::ExprKind;
using sched::LoopKernel;
using sched::Store;

// A literal of dtype d, exact (hex floats); non-finite values through their bit patterns,
// which NVRTC and the emulator both read.
std::string cuda_literal(double v, Dtype d) {
  const std::string t = dtype_c_type(d);
  switch (d) {
    case Dtype::Bool:
      return v != 0 ? "true" : "false";
    case Dtype::UInt8:
    case Dtype::Int32:
    case Dtype::Int64:
      return "((" + t + ")" + std::to_string(static_cast<long long>(v)) + "LL)";
    case Dtype::Float32:
    case Dtype::Float64: {
      if (std::isnan(v)) return "((" + t + ")__longlong_as_double(0x7ff8000000000000LL))";
      if (std::isinf(v)) return "((" + t + ")" + (v < 0 ? "" : "-") + "thea_neg_inf<double>())";
      char buf[64];
      std::snprintf(buf, sizeof buf, "((%s)%a)", t.c_str(),
                    d == Dtype::Float32 ? static_cast<double>(static_cast<float>(v)) : v);
      return buf;
    }
  }
  return "0";
}

class LoopKernelWriter {
 public:
  explicit LoopKernelWriter(KernelWriter& kw) : kw_(kw), st_(kw.step_), lk_(*kw.step_.loop) {}

  void render() {
    const int r = static_cast<int>(lk_.domain.size());
    for (int d = 0; d < r; ++d)
      (lk_.inner[static_cast<std::size_t>(d)] ? inner_ : outer_).push_back(d);
    for (std::size_t i = 0; i < lk_.exprs.size(); ++i)
      if (is_final(lk_.exprs[i])) finals_.push_back(static_cast<int>(i));
    if (st_.prologue >= 0)
      emit_row_product_setup(kw_);
    else
      os() << "  THEA_DYN_SMEM(thea_smem);\n";
    // Run-time sizes first: later code reads them from nested scopes.
    for (const Dim& d : lk_.domain)
      if (!d.is_static()) sym_code(d.sym);
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Count)
        for (int sy : e.axes) sym_code(sy);
    for (int d = 0; d < r; ++d)
      os() << "  const long long n" << d << " = "
           << dim_code(lk_.domain[static_cast<std::size_t>(d)]) << ";\n";
    os() << "  const long long n_outer = " << product(outer_) << ";\n";
    if (!inner_.empty()) os() << "  const long long n_inner = " << product(inner_) << ";\n";
    declare_accesses();
    emit_level0();
    for (int f : finals_)
      os() << "  " << acc_type(ex(f)) << " f" << f << " = " << acc_init(ex(f)) << ";\n";
    if (inner_.empty())
      point_per_thread();
    else
      segment_per_point();
    after_loop();
  }

 private:
  std::ostringstream& os() { return kw_.body; }
  const Expr& ex(int i) const { return lk_.exprs[static_cast<std::size_t>(i)]; }
  int value_of_access(int a) const { return st_.loop_values[static_cast<std::size_t>(a)]; }
  static bool is_final(const Expr& e) { return e.kind == ExprKind::Reduce && e.final; }
  static bool is_inner_reduce(const Expr& e) {
    return (e.kind == ExprKind::Reduce && !e.final) || e.kind == ExprKind::ArgReduce;
  }

  std::string sym_code(int sym) {
    auto it = syms_.find(sym);
    if (it != syms_.end()) return it->second;
    const auto& [v, axis] = st_.loop_syms.at(static_cast<std::size_t>(sym));
    if (v < 0)
      throw Error("cuda codegen: internal error: no value gives run-time size d" +
                  std::to_string(sym));
    const std::string name = "d" + std::to_string(sym);
    syms_[sym] = name;
    os() << "  const long long " << name << " = " << kw_.word_dim(v, axis) << ";\n";
    return name;
  }
  std::string dim_code(const Dim& d) {
    return d.is_static() ? std::to_string(d.size) + "LL" : sym_code(d.sym);
  }
  std::string product(const std::vector<int>& axes) const {
    std::string s;
    for (int d : axes) s += (s.empty() ? "n" : " * n") + std::to_string(d);
    return s.empty() ? "1LL" : s;
  }

  // Pointers and the strides of every axis an access moves along, read once per launch.
  void declare_accesses() {
    std::set<int> stored;
    for (const Store& s : lk_.stores) stored.insert(s.access);
    std::set<int> loaded;
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Load) loaded.insert(e.access);
    for (std::size_t a = 0; a < lk_.accesses.size(); ++a) {
      const int ai = static_cast<int>(a);
      if (!stored.count(ai) && !loaded.count(ai)) continue;
      const int v = value_of_access(ai);
      const Value& val = kw_.val(v);
      if (val.place == Place::Host) continue;  // read from the argument block
      if (v == st_.prologue) continue;         // this kernel's rows of the product
      if (stored.count(ai)) {
        // Written in place: the shared variable's buffer, fixed for the instance.
        const int where = (v == st_.out && st_.target >= 0) ? st_.target : v;
        const std::string t = dtype_c_type(kw_.dtype_of(v));
        os() << "  " << t << "* const x" << a << " = (" << t << "*)"
             << kw_.word({ParamWord::Kind::Ptr, where, 0, 0, 0, {}}) << ";\n";
      } else {
        os() << "  const " << dtype_c_type(kw_.dtype_of(v)) << "* const x" << a << " = "
             << kw_.ptr(v) << ";\n";
      }
      if (flat(ai)) continue;  // indexed by the point itself
      const auto& axis_of = lk_.accesses[a].axis_of;
      for (std::size_t d = 0; d < axis_of.size(); ++d)
        if (axis_of[d] >= 0)
          os() << "  const long long s" << a << "_" << d << " = " << kw_.word_stride(v, axis_of[d])
               << ";\n";
    }
  }

  // Whether access `a` of a kernel without inner axes reads or writes element `o` at point o:
  // contiguous storage whose axes are the domain's, in order (no broadcast, no transpose).
  // Then no point is split into axis indices for it (a 64-bit division per axis on the GPU).
  bool flat(int a) const {
    if (!inner_.empty()) return false;
    const int v = value_of_access(a);
    const Value& val = kw_.val(v);
    const auto& axis_of = lk_.accesses[static_cast<std::size_t>(a)].axis_of;
    if (!val.contiguous_storage() || axis_of.empty() ||
        val.node->type.ndim() != static_cast<int>(axis_of.size()))
      return false;
    for (std::size_t d = 0; d < axis_of.size(); ++d)
      if (axis_of[d] != static_cast<int>(d)) return false;
    return true;
  }

  // Whether the kernel needs a point's axis indices: an access that is not flat, or an index.
  bool needs_indices() const {
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Index ||
          (e.kind == ExprKind::Load && kw_.val(value_of_access(e.access)).place != Place::Host &&
           !flat(e.access)))
        return true;
    for (const Store& s : lk_.stores)
      if (!flat(s.access)) return true;
    return false;
  }

  std::string element(int a) const {
    if (flat(a)) return "x" + std::to_string(a) + "[o]";
    const auto& axis_of = lk_.accesses[static_cast<std::size_t>(a)].axis_of;
    std::string off;
    for (std::size_t d = 0; d < axis_of.size(); ++d)
      if (axis_of[d] >= 0)
        off += (off.empty() ? "" : " + ") + std::string("i") + std::to_string(d) + " * s" +
               std::to_string(a) + "_" + std::to_string(d);
    return "x" + std::to_string(a) + "[" + (off.empty() ? "0" : off) + "]";
  }

  // ---- reductions ------------------------------------------------------------------------
  // Accumulator types as the cpu renderer's (sums and products of floats in double, of
  // integers in wrapping 64 bits), except that max/min of 1-byte values use int (shuffles
  // move 4 or 8 bytes).
  std::string acc_type(const Expr& e) const {
    const Dtype in = ex(e.args[0]).dtype;
    if (e.kind == ExprKind::Reduce && e.reduce != ReduceKind::Max && e.reduce != ReduceKind::Min)
      return is_float(e.accum) ? "double" : "unsigned long long";
    return value_type(in);
  }
  static std::string value_type(Dtype in) {
    if (in == Dtype::Bool || in == Dtype::UInt8) return "int";
    if (in == Dtype::Int64) return "long long";
    return dtype_c_type(in);
  }
  std::string acc_init(const Expr& e) const {
    const Dtype in = ex(e.args[0]).dtype;
    const std::string t = acc_type(e);
    switch (e.reduce) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        return "(" + t + ")0";
      case ReduceKind::Prod:
        return "(" + t + ")1";
      case ReduceKind::Max:
        return is_float(in) ? "thea_neg_inf<" + t + ">()" : "(" + t + ")" + int_limit(in, false);
      case ReduceKind::Min:
        return is_float(in) ? "(-thea_neg_inf<" + t + ">())" : "(" + t + ")" + int_limit(in, true);
    }
    return "0";
  }
  // acc combined with one element x of the reduced values.
  std::string accumulate(const Expr& e, const std::string& acc, const std::string& x) const {
    const std::string t = acc_type(e);
    switch (e.reduce) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        return t == "double" ? acc + " + (double)(" + x + ")"
                             : acc + " + (unsigned long long)(long long)(" + x + ")";
      case ReduceKind::Prod:
        return t == "double" ? acc + " * (double)(" + x + ")"
                             : acc + " * (unsigned long long)(long long)(" + x + ")";
      default:
        return combine_acc(e, acc, "(" + t + ")(" + x + ")");
    }
  }
  std::string combine_acc(const Expr& e, const std::string& a, const std::string& b) const {
    const std::string t = acc_type(e);
    switch (e.reduce) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        return a + " + " + b;
      case ReduceKind::Prod:
        return a + " * " + b;
      case ReduceKind::Max:
        return "thea_maximum<" + t + ">(" + a + ", " + b + ")";
      case ReduceKind::Min:
        return "thea_minimum<" + t + ">(" + a + ", " + b + ")";
    }
    return a;
  }
  std::string reduce_op(const Expr& e) const {
    const std::string t = acc_type(e);
    switch (e.reduce) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        return "thea_op_add<" + t + ">()";
      case ReduceKind::Prod:
        return "thea_op_mul<" + t + ">()";
      case ReduceKind::Max:
        return "thea_op_max<" + t + ">()";
      case ReduceKind::Min:
        return "thea_op_min<" + t + ">()";
    }
    return "";
  }
  // The accumulator as the reduction's dtype (wrapped integer sums read back as int64).
  std::string acc_value(const Expr& e, const std::string& acc) const {
    const std::string t = dtype_c_type(e.dtype);
    if (acc_type(e) == "unsigned long long") return "(" + t + ")(long long)" + acc;
    return "(" + t + ")" + acc;
  }

  // ---- expressions -------------------------------------------------------------------------
  void emit_expr(int i, const std::string& ind) {
    const Expr& e = ex(i);
    const std::string t = dtype_c_type(e.dtype);
    os() << ind << "const " << t << " e" << i << " = ";
    switch (e.kind) {
      case ExprKind::Load: {
        if (!e.index_args.empty())
          throw Error("cuda codegen: gathers in loop kernels are not supported");
        const int v = value_of_access(e.access);
        if (kw_.val(v).place == Place::Host)
          os() << kw_.host_scalar(v);
        else if (v == st_.prologue)  // at (this row, column i<inner>): see chain_prologue
          os() << "thea_tile[threadIdx.y * NC + i" << inner_.at(0) << "]";
        else
          os() << element(e.access);
        break;
      }
      case ExprKind::Const:
        os() << cuda_literal(e.value, e.dtype);
        break;
      case ExprKind::Count: {
        std::string s = std::to_string(static_cast<long long>(e.value)) + "LL";
        for (int sy : e.axes) s += " * " + sym_code(sy);
        os() << "(" << t << ")(" << s << ")";
        break;
      }
      case ExprKind::Index:
        os() << "(" << t << ")i" << e.axis;
        break;
      case ExprKind::Scalar: {
        if (e.op == ScalarOp::Cast) {
          os() << "thea_cast<" << t << ">(e" << e.args[0] << ")";
          break;
        }
        if (e.op == ScalarOp::Second) {  // y broadcast by the loop; x is never read
          os() << "thea_cast<" << t << ">(e" << e.args[1] << ")";
          break;
        }
        const ScalarOpInfo& info = scalar_info(e.op);
        const std::string ct = dtype_c_type(e.compute);
        if (e.op == ScalarOp::Pow && !is_float(e.compute)) {
          // Integer powers in double, as the host's std::pow (CUDA's pow has no integer form).
          os() << "(" << t << ")(" << ct << ")" << info.functor << "<double>((double)e" << e.args[0]
               << ", (double)e" << e.args[1] << ")";
          break;
        }
        std::string call = std::string(info.functor) + "(";
        for (std::size_t a = 0; a < e.args.size(); ++a) {
          const bool conv =
              a < e.convert.size() && e.convert[a] && ex(e.args[a]).dtype != e.compute;
          const std::string arg = "e" + std::to_string(e.args[a]);
          call += (a ? ", " : "") + (conv ? "(" + ct + ")" + arg : arg);
        }
        os() << "(" << t << ")(" << call << "))";
        break;
      }
      case ExprKind::Reduce:
        os() << acc_value(e, "a" + std::to_string(i));
        break;
      case ExprKind::ArgReduce:
        os() << "(" << t << ")a" << i;
        break;
    }
    os() << ";\n";
  }

  void emit_store(const Store& s, const std::string& ind) {
    const int v = value_of_access(s.access);
    os() << ind << element(s.access) << " = (" << dtype_c_type(kw_.dtype_of(v)) << ")e" << s.expr
         << ";\n";
  }

  void emit_level0() {
    for (std::size_t i = 0; i < lk_.exprs.size(); ++i)
      if (ex(static_cast<int>(i)).level == 0) emit_expr(static_cast<int>(i), "  ");
  }

  // Outer point `flat` as its axis indices i<d>.
  void decompose(const std::vector<int>& axes, const std::string& flat, const std::string& ind) {
    if (axes.empty()) return;
    os() << ind << "long long rem_" << flat << " = " << flat << ";\n";
    for (int k = static_cast<int>(axes.size()) - 1; k >= 0; --k) {
      const int d = axes[static_cast<std::size_t>(k)];
      if (k > 0)
        os() << ind << "const long long i" << d << " = rem_" << flat << " % n" << d << "; rem_"
             << flat << " /= n" << d << ";\n";
      else
        os() << ind << "const long long i" << d << " = rem_" << flat << ";\n";
    }
  }

  // ---- no inner axes: a thread per point ----------------------------------------------------
  void point_per_thread() {
    os() << "  for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < n_outer;"
            " o += (long long)gridDim.x * blockDim.x) {\n";
    if (needs_indices()) decompose(outer_, "o", "    ");
    for (std::size_t i = 0; i < lk_.exprs.size(); ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 1 || e.level == 2) emit_expr(static_cast<int>(i), "    ");
    }
    for (const Store& s : lk_.stores)
      if (ex(s.expr).level == 1 || ex(s.expr).level == 2) emit_store(s, "    ");
    for (int f : finals_)
      os() << "    f" << f << " = "
           << accumulate(ex(f), "f" + std::to_string(f), "e" + std::to_string(ex(f).args[0]))
           << ";\n";
    os() << "  }\n";
  }

  // ---- inner axes: a segment of threads per point ------------------------------------------
  void segment_per_point() {
    os()
        << "  for (long long base = (long long)blockIdx.x * blockDim.y; base < n_outer;"
           " base += (long long)gridDim.x * blockDim.y) {\n"
           "    const long long o = base + threadIdx.y;\n"
           "    const bool valid = o < n_outer;\n"
           "    const long long oc = valid ? o : 0;  // idle rows read point 0 and store nothing\n";
    decompose(outer_, "oc", "    ");
    if (st_.prologue >= 0) emit_row_product(kw_, "oc");
    const int n = static_cast<int>(lk_.exprs.size());
    for (int i = 0; i < n; ++i)
      if (ex(i).level == 1 && ex(i).phase == 0 && !is_inner_reduce(ex(i))) emit_expr(i, "    ");
    for (int p = 0; p < lk_.passes; ++p) emit_pass(p);
    for (int i = 0; i < n; ++i)
      if (ex(i).level == 1 && ex(i).phase > lk_.passes && !is_inner_reduce(ex(i)))
        emit_expr(i, "    ");
    bool outer_work = false;
    for (const Store& s : lk_.stores) outer_work |= ex(s.expr).level == 1;
    for (int f : finals_) outer_work |= ex(ex(f).args[0]).level == 1;
    if (outer_work) {
      os() << "    if (valid && threadIdx.x == 0) {\n";
      for (const Store& s : lk_.stores)
        if (ex(s.expr).level == 1) emit_store(s, "      ");
      for (int f : finals_)
        if (ex(ex(f).args[0]).level == 1)
          os() << "      f" << f << " = "
               << accumulate(ex(f), "f" + std::to_string(f), "e" + std::to_string(ex(f).args[0]))
               << ";\n";
      os() << "    }\n";
    }
    os() << "  }\n";
  }

  void emit_pass(int p) {
    const int n = static_cast<int>(lk_.exprs.size());
    const bool last = p + 1 == lk_.passes;
    auto reduced_here = [&](const Expr& e) {
      return ex(e.args[0]).level == 2 && ex(e.args[0]).phase == p;
    };
    std::vector<bool> need(static_cast<std::size_t>(n), false);
    std::vector<int> accs;
    for (int i = 0; i < n; ++i) {
      const Expr& e = ex(i);
      if ((is_inner_reduce(e) || is_final(e)) && reduced_here(e)) {
        need[static_cast<std::size_t>(e.args[0])] = true;
        if (is_inner_reduce(e)) accs.push_back(i);
      }
    }
    for (const Store& s : lk_.stores)
      if (last && ex(s.expr).level == 2) need[static_cast<std::size_t>(s.expr)] = true;
    for (int i = n - 1; i >= 0; --i) {
      if (!need[static_cast<std::size_t>(i)]) continue;
      const Expr& e = ex(i);
      for (std::size_t a = 0; a < e.args.size(); ++a)
        if (e.reads_arg(a) && ex(e.args[a]).level == 2)
          need[static_cast<std::size_t>(e.args[a])] = true;
    }
    os() << "    // pass " << p << "\n";
    for (int i : accs) {
      const Expr& e = ex(i);
      if (e.kind == ExprKind::ArgReduce) {
        const Dtype in = ex(e.args[0]).dtype;
        const std::string vt = value_type(in);
        const std::string init = is_float(in) ? (e.is_max ? "thea_neg_inf<" + vt + ">()"
                                                          : "(-thea_neg_inf<" + vt + ">())")
                                              : "(" + vt + ")" + int_limit(in, !e.is_max);
        os() << "    " << vt << " b" << i << " = " << init << ";\n"
             << "    long long a" << i << " = 9223372036854775807LL;\n";
      } else {
        os() << "    " << acc_type(e) << " a" << i << " = " << acc_init(e) << ";\n";
      }
    }
    os() << "    for (long long q = threadIdx.x; q < n_inner; q += blockDim.x) {\n";
    decompose(inner_, "q", "      ");
    for (int i = 0; i < n; ++i)
      if (need[static_cast<std::size_t>(i)]) emit_expr(i, "      ");
    for (int i : accs) {
      const Expr& e = ex(i);
      const std::string x = "e" + std::to_string(e.args[0]);
      if (e.kind == ExprKind::ArgReduce) {
        const std::string vt = value_type(ex(e.args[0]).dtype);
        os() << "      if (thea_arg_better<" << vt << ">((" << vt << ")" << x << ", i" << e.axis
             << ", b" << i << ", a" << i << ", " << (e.is_max ? "true" : "false") << ")) { b" << i
             << " = (" << vt << ")" << x << "; a" << i << " = i" << e.axis << "; }\n";
      } else {
        os() << "      a" << i << " = " << accumulate(e, "a" + std::to_string(i), x) << ";\n";
      }
    }
    for (int f : finals_)
      if (reduced_here(ex(f)))
        os() << "      if (valid) f" << f << " = "
             << accumulate(ex(f), "f" + std::to_string(f), "e" + std::to_string(ex(f).args[0]))
             << ";\n";
    for (const Store& s : lk_.stores)
      if (last && ex(s.expr).level == 2) {
        os() << "      if (valid) ";
        emit_store(s, "");
      }
    os() << "    }\n";
    for (int i : accs) {
      const Expr& e = ex(i);
      if (e.kind == ExprKind::ArgReduce) {
        const std::string vt = value_type(ex(e.args[0]).dtype);
        os() << "    thea_segment_argreduce<" << vt << ">(b" << i << ", a" << i << ", "
             << (e.is_max ? "true" : "false") << ", thea_smem);\n";
      } else {
        const std::string t = acc_type(e);
        os() << "    a" << i << " = thea_segment_allreduce<" << t << ">(a" << i << ", "
             << reduce_op(e) << ", (" << t << "*)thea_smem);\n";
      }
      emit_expr(i, "    ");
    }
    for (int i = 0; i < n; ++i)
      if (ex(i).level == 1 && ex(i).phase == p + 1 && !is_inner_reduce(ex(i))) emit_expr(i, "    ");
  }

  // ---- after the loop: final reductions, values after the loop, scalar stores -------------
  void after_loop() {
    bool scalar_stores = false;
    for (const Store& s : lk_.stores)
      scalar_stores |= ex(s.expr).level == 0 || ex(s.expr).level == 3;
    if (finals_.empty()) {
      if (scalar_stores) {
        os() << "  if (blockIdx.x == 0 && threadIdx.x == 0 && threadIdx.y == 0) {\n";
        for (const Store& s : lk_.stores)
          if (ex(s.expr).level == 0) emit_store(s, "    ");
        os() << "  }\n";
      }
      return;
    }
    const std::string nf = std::to_string(finals_.size());
    st_.loop_scratch_words = static_cast<int>(st_.params.size());
    const std::string parts = kw_.word_const(0), count = kw_.word_const(0);
    os() << "  const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x;\n"
            "  const unsigned nt = blockDim.x * blockDim.y;\n"
            "  unsigned long long* const parts = (unsigned long long*)"
         << parts << ";\n";
    for (std::size_t k = 0; k < finals_.size(); ++k) {
      const int f = finals_[k];
      const std::string t = acc_type(ex(f));
      os() << "  __syncthreads();\n"
           << "  ((" << t << "*)thea_smem)[tid] = f" << f << ";\n"
           << "  __syncthreads();\n"
           << "  if (tid == 0) {\n"
           << "    " << t << " b = ((" << t << "*)thea_smem)[0];\n"
           << "    for (unsigned k = 1; k < nt; ++k) b = "
           << combine_acc(ex(f), "b", "((" + t + "*)thea_smem)[k]") << ";\n"
           << "    *(" << t << "*)(parts + (unsigned long long)blockIdx.x * " << nf << " + " << k
           << ") = b;\n"
           << "  }\n";
    }
    os() << "  if (tid == 0) {\n"
         << "    unsigned* const count = (unsigned*)" << count << ";\n"
         << "    __threadfence();\n"
         << "    if (atomicAdd(count, 1u) == gridDim.x - 1u) {\n"
         << "      __threadfence();\n";
    for (std::size_t k = 0; k < finals_.size(); ++k) {
      const int f = finals_[k];
      const std::string t = acc_type(ex(f));
      const std::string at = "*(const volatile " + t + "*)(parts + (unsigned long long)b * " + nf +
                             " + " + std::to_string(k) + ")";
      os() << "      " << t << " a" << f << " = *(const volatile " << t << "*)(parts + " << k
           << ");\n"
           << "      for (unsigned b = 1; b < gridDim.x; ++b) { const " << t << " v = " << at
           << "; a" << f << " = " << combine_acc(ex(f), "a" + std::to_string(f), "v") << "; }\n";
      emit_expr(f, "      ");
    }
    for (std::size_t i = 0; i < lk_.exprs.size(); ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 3 && !is_final(e)) emit_expr(static_cast<int>(i), "      ");
    }
    for (const Store& s : lk_.stores)
      if (ex(s.expr).level == 0 || ex(s.expr).level == 3) emit_store(s, "      ");
    os() << "      *count = 0u;  // ready for the next launch (graph replays)\n"
         << "    }\n"
         << "  }\n";
  }

  KernelWriter& kw_;
  Step& st_;
  const LoopKernel& lk_;
  std::vector<int> inner_, outer_, finals_;
  std::map<int, std::string> syms_;
};

}  // namespace

void render_loop_kernel(KernelWriter& kw) { LoopKernelWriter(kw).render(); }

}  // namespace thea::cuda
