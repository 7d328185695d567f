#include "render.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "preamble.hpp"
#include "thea/error.hpp"

namespace thea::cpu {

using namespace thea::sched;

namespace {

std::string literal(double v, Dtype d) {
  char buf[64];
  switch (d) {
    case Dtype::Bool:
      return v != 0 ? "true" : "false";
    case Dtype::UInt8:
    case Dtype::Int32:
    case Dtype::Int64:
      std::snprintf(buf, sizeof buf, "((%s)INT64_C(%lld))", dtype_c_type(d),
                    static_cast<long long>(v));
      return buf;
    case Dtype::Float32:
    case Dtype::Float64: {
      const char* t = dtype_c_type(d);
      if (std::isnan(v)) return std::string("((") + t + ")__builtin_nan(\"\"))";
      if (std::isinf(v))
        return std::string("((") + t + ")(" + (v < 0 ? "-" : "") + "__builtin_inf()))";
      // Hex float: exact. For float32 the value was already rounded to float.
      std::snprintf(buf, sizeof buf, "((%s)%a)", t,
                    d == Dtype::Float32 ? static_cast<double>(static_cast<float>(v)) : v);
      return buf;
    }
  }
  return "0";
}

// The smallest / largest value of an integer dtype (identities of max / min), as code.
std::string int_limit(Dtype d, bool largest) {
  switch (d) {
    case Dtype::Bool:
      return largest ? "true" : "false";
    case Dtype::UInt8:
      return largest ? "((uint8_t)255)" : "((uint8_t)0)";
    case Dtype::Int32:
      return largest ? "INT32_MAX" : "INT32_MIN";
    default:
      return largest ? "INT64_MAX" : "INT64_MIN";
  }
}

std::string dim_code(const Dim& d) {
  if (d.is_static()) return "INT64_C(" + std::to_string(d.size) + ")";
  return "d" + std::to_string(d.sym);
}

// Product of dims as code; "INT64_C(1)" when empty.
std::string product_code(const std::vector<Dim>& dims) {
  std::int64_t c = 1;
  std::string s;
  for (const Dim& d : dims) {
    if (d.is_static())
      c *= d.size;
    else
      s += (s.empty() ? "" : " * ") + dim_code(d);
  }
  if (s.empty()) return "INT64_C(" + std::to_string(c) + ")";
  if (c != 1) s = "INT64_C(" + std::to_string(c) + ") * " + s;
  return "(" + s + ")";
}

int root_of(const Schedule& s, int b) {
  while (s.buffers[b].kind == BufferKind::View) b = s.buffers[b].base;
  return b;
}

// Element stride of buffer b's axis `axis`, as code ("0" for inserted size-1 axes).
std::string stride_code(const Schedule& s, int b, int axis) {
  const Buffer& x = s.buffers[b];
  if (x.kind == BufferKind::View && !x.reinterpret) {
    int a = x.axis_map[axis];
    if (a < 0) return "INT64_C(0)";
    return stride_code(s, x.base, a);
  }
  std::vector<Dim> after(x.dims.begin() + axis + 1, x.dims.end());
  return product_code(after);
}

class LoopRenderer {
 public:
  LoopRenderer(const Schedule& s, const Kernel& k, std::ostringstream& os)
      : s_(s), k_(k), lk_(k.loop), os_(os) {}

  KernelCode render() {
    KernelCode code;
    code.launch = Launch::Loop;
    code.fn = k_.name;
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Reduce && e.final) finals_.push_back(&e - lk_.exprs.data());
    code.finals = static_cast<int>(finals_.size());
    const int r = static_cast<int>(lk_.domain.size());
    for (int d = 0; d < r; ++d) (lk_.inner[d] ? inner_ : outer_).push_back(d);

    // ---- part function ----
    os_ << "extern \"C\" void " << k_.name
        << "(void* const* P, const int64_t* D, void* S, int part, int nparts) {\n";
    prologue();
    emit_level(0, "  ");
    for (int f : finals_) {
      const Expr& e = lk_.exprs[f];
      os_ << "  " << acc_type(e) << " f" << f << " = " << acc_init(e) << ";\n";
    }
    if (r > 0) {
      os_ << "  const int64_t n_outer = " << product_code(outer_dims()) << ";\n";
      os_ << "  const int64_t o_begin = n_outer * part / nparts, o_end = n_outer * (part + 1) / "
             "nparts;\n";
      if (!outer_.empty()) {
        const int last = outer_.back();
        os_ << "  const int64_t n_last = " << dim_code(lk_.domain[last]) << ";\n";
        os_ << "  for (int64_t flat = o_begin; flat < o_end;) {\n";
        os_ << "    const int64_t row = flat / n_last;\n";
        os_ << "    const int64_t c0 = flat - row * n_last;\n";
        os_ << "    const int64_t c1 = (n_last - c0 < o_end - flat) ? n_last : c0 + (o_end - "
               "flat);\n";
        if (outer_.size() > 1) {
          os_ << "    int64_t rem = row;\n";
          for (int i = static_cast<int>(outer_.size()) - 2; i >= 0; --i) {
            int d = outer_[i];
            os_ << "    const int64_t i" << d << " = rem % " << dim_code(lk_.domain[d])
                << "; rem /= " << dim_code(lk_.domain[d]) << ";\n";
          }
          os_ << "    (void)rem;\n";
        }
        if (row_block_mode()) {
          // Full blocks get a compile-time row count, so the compiler vectorises every
          // loop over the block's rows completely; the last, partial block uses the same
          // code with a run-time count.
          os_ << "    for (int64_t ib = c0; ib < c1; ib += " << kRowBlock << ") {\n"
              << "      const int rows = (int)(c1 - ib < " << kRowBlock
              << " ? c1 - ib : " << kRowBlock << ");\n"
              << "      if (rows == " << kRowBlock << ") {\n"
              << "        constexpr int nr = " << kRowBlock << ";\n";
          rb_ = true;
          plan_staging();  // the same tiles for both copies of the block's code
          outer_body_rb("        ");
          os_ << "      } else {\n"
              << "        const int nr = rows;\n";
          outer_body_rb("        ");
          rb_ = false;
          os_ << "      }\n"
              << "    }\n";
        } else {
          os_ << "    for (int64_t i" << last << " = c0; i" << last << " < c1; ++i" << last
              << ") {\n";
          outer_body("      ");
          os_ << "    }\n";
        }
        os_ << "    flat += c1 - c0;\n";
        os_ << "  }\n";
      } else {
        os_ << "  if (o_begin < o_end) {\n";
        outer_body("    ");
        os_ << "  }\n";
      }
    }
    for (std::size_t i = 0; i < finals_.size(); ++i)
      os_ << "  __builtin_memcpy((unsigned char*)S + ((int64_t)part * " << finals_.size() << " + "
          << i << ") * 8, &f" << finals_[i] << ", sizeof f" << finals_[i] << ");\n";
    os_ << "  (void)S; (void)part; (void)nparts;\n}\n\n";

    // ---- finish: combine partials, after-loop values, scalar stores ----
    bool need_finish = !finals_.empty();
    for (const Store& st : lk_.stores)
      if (lk_.exprs[st.expr].level == 0 || lk_.exprs[st.expr].level == 3) need_finish = true;
    if (need_finish) {
      code.finish = k_.name + "_finish";
      os_ << "extern \"C\" void " << code.finish
          << "(void* const* P, const int64_t* D, void* S, int nparts) {\n";
      prologue();
      emit_level(0, "  ");
      for (std::size_t i = 0; i < finals_.size(); ++i) {
        const int f = finals_[i];
        const Expr& e = lk_.exprs[f];
        os_ << "  " << acc_type(e) << " f" << f << " = " << acc_init(e) << ";\n";
        os_ << "  for (int p = 0; p < nparts; ++p) {\n";
        os_ << "    " << acc_type(e) << " v;\n";
        os_ << "    __builtin_memcpy(&v, (const unsigned char*)S + ((int64_t)p * " << finals_.size()
            << " + " << i << ") * 8, sizeof v);\n";
        os_ << "    f" << f << " = " << combine(e, "f" + std::to_string(f), "v") << ";\n";
        os_ << "  }\n";
        os_ << "  const " << dtype_c_type(e.dtype) << " e" << f << " = "
            << acc_value(e, "f" + std::to_string(f)) << ";\n";
      }
      for (std::size_t i = 0; i < lk_.exprs.size(); ++i) {
        const Expr& e = lk_.exprs[i];
        if (e.level != 3 || (e.kind == ExprKind::Reduce && e.final)) continue;
        emit_expr(static_cast<int>(i), "  ");
      }
      for (const Store& st : lk_.stores) {
        int lv = lk_.exprs[st.expr].level;
        if (lv == 0 || lv == 3) emit_store(st, "  ");
      }
      os_ << "  (void)S; (void)nparts;\n}\n\n";
    }
    return code;
  }

 private:
  std::vector<Dim> outer_dims() const {
    std::vector<Dim> d;
    for (int a : outer_) d.push_back(lk_.domain[a]);
    return d;
  }

  void prologue() {
    std::set<int> syms;
    auto add_dims = [&](const std::vector<Dim>& dims) {
      for (const Dim& d : dims)
        if (!d.is_static()) syms.insert(d.sym);
    };
    add_dims(lk_.domain);
    for (const Access& a : lk_.accesses) {
      add_dims(s_.buffers[a.buffer].dims);
      for (int b = a.buffer; s_.buffers[b].kind == BufferKind::View; b = s_.buffers[b].base)
        add_dims(s_.buffers[s_.buffers[b].base].dims);
    }
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Count)
        for (int sy : e.axes) syms.insert(sy);
    for (int sy : syms) os_ << "  const int64_t d" << sy << " = D[" << sy << "];\n";
    std::set<int> roots;
    for (const Access& a : lk_.accesses) roots.insert(root_of(s_, a.buffer));
    for (int rt : roots)
      os_ << "  " << dtype_c_type(s_.buffers[rt].dtype) << "* const p" << rt << " = ("
          << dtype_c_type(s_.buffers[rt].dtype) << "*)P[" << rt << "];\n";
    os_ << "  (void)D;\n";
  }

  // Index of access `a` at the current loop point.
  std::string index_code(int ai) {
    const Access& a = lk_.accesses[ai];
    std::string s;
    for (std::size_t d = 0; d < a.axis_of.size(); ++d) {
      if (a.axis_of[d] < 0) continue;
      std::string st = stride_code(s_, a.buffer, a.axis_of[d]);
      if (st == "INT64_C(0)") continue;
      s += (s.empty() ? "" : " + ") + std::string("i") + std::to_string(d) +
           (st == "INT64_C(1)" ? "" : " * " + st);
    }
    return s.empty() ? "0" : s;
  }

  // In row-block mode, outer values are arrays over the block's rows, read at row r.
  std::string ref(int e) {
    return "e" + std::to_string(e) + (rb_ && lk_.exprs[e].level == 1 ? "[r]" : "");
  }

  std::string acc_type(const Expr& e) {
    if (e.kind == ExprKind::Reduce && (e.reduce == ReduceKind::Sum || e.reduce == ReduceKind::Prod))
      return is_float(e.accum) ? "double" : "uint64_t";
    return dtype_c_type(lk_.exprs[e.args[0]].dtype);
  }
  // The accumulator converted to the reduction's dtype. Integer sums wrap in uint64_t (no
  // signed-overflow UB) but hold int64 values: read back through int64_t, or -10 becomes 1.8e19.
  std::string acc_value(const Expr& e, const std::string& acc) {
    const std::string t = dtype_c_type(e.dtype);
    if (e.kind == ExprKind::Reduce && acc_type(e) == "uint64_t")
      return "(" + t + ")(int64_t)" + acc;
    return "(" + t + ")" + acc;
  }
  std::string acc_init(const Expr& e) {
    const Dtype in = lk_.exprs[e.args[0]].dtype;
    switch (e.reduce) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        return is_float(e.accum) ? "0.0" : "0";
      case ReduceKind::Prod:
        return is_float(e.accum) ? "1.0" : "1";
      case ReduceKind::Max:
        if (is_float(in)) return std::string("-(") + dtype_c_type(in) + ")__builtin_inf()";
        return int_limit(in, false);
      case ReduceKind::Min:
        if (is_float(in)) return std::string("(") + dtype_c_type(in) + ")__builtin_inf()";
        return int_limit(in, true);
    }
    return "0";
  }
  std::string combine(const Expr& e, const std::string& acc, const std::string& v) {
    const std::string t = acc_type(e);
    switch (e.reduce) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        if (t == "uint64_t") return acc + " + (uint64_t)(int64_t)(" + v + ")";
        return acc + " + (double)(" + v + ")";
      case ReduceKind::Prod:
        if (t == "uint64_t") return acc + " * (uint64_t)(int64_t)(" + v + ")";
        return acc + " * (double)(" + v + ")";
      case ReduceKind::Max:
        return "thea_maximum<" + t + ">(" + acc + ", " + v + ")";
      case ReduceKind::Min:
        return "thea_minimum<" + t + ">(" + acc + ", " + v + ")";
    }
    return acc;
  }

  void emit_expr(int i, const std::string& ind) {
    const Expr& e = lk_.exprs[i];
    const char* t = dtype_c_type(e.dtype);
    if (rb_ && e.level == 1)
      os_ << ind << "e" << i << "[r] = ";  // declared as an array before the row loop
    else
      os_ << ind << "const " << t << " e" << i << " = ";
    switch (e.kind) {
      case ExprKind::Load: {
        if (rb_ && staged(e.access)) {
          os_ << "t" << e.access << "[i" << inner_[0] << "][r]";
          break;
        }
        int rt = root_of(s_, lk_.accesses[e.access].buffer);
        os_ << "p" << rt << "[" << index_code(e.access) << "]";
        break;
      }
      case ExprKind::Const:
        os_ << literal(e.value, e.dtype);
        break;
      case ExprKind::Count: {
        std::string s = "INT64_C(" + std::to_string(static_cast<long long>(e.value)) + ")";
        for (int sy : e.axes) s += " * d" + std::to_string(sy);
        os_ << "(" << t << ")(" << s << ")";
        break;
      }
      case ExprKind::Index:
        os_ << "(" << t << ")i" << e.axis;
        break;
      case ExprKind::Scalar: {
        const ScalarOpInfo& info = scalar_info(e.op);
        const char* ct = dtype_c_type(e.compute);
        if (e.op == ScalarOp::Cast) {
          os_ << "thea_cast<" << t << ">(" << ref(e.args[0]) << ")";
          break;
        }
        if (e.op == ScalarOp::Second) {  // y broadcast by the loop; x may not be known yet
          os_ << "thea_cast<" << t << ">(" << ref(e.args[1]) << ")";
          break;
        }
        std::string call = std::string(info.functor) + "(";
        for (std::size_t a = 0; a < e.args.size(); ++a) {
          const Dtype ad = lk_.exprs[e.args[a]].dtype;
          bool conv = a < e.convert.size() && e.convert[a] && ad != e.compute;
          call += (a ? ", " : "") +
                  (conv ? "(" + std::string(ct) + ")" + ref(e.args[a]) : ref(e.args[a]));
        }
        call += ")";
        os_ << "(" << t << ")(" << call << ")";
        break;
      }
      case ExprKind::Reduce:
      case ExprKind::ArgReduce:
        os_ << acc_value(e, "a" + std::to_string(i) + (rb_ ? "[r]" : ""));
        break;
    }
    os_ << ";\n";
  }

  void emit_store(const Store& st, const std::string& ind) {
    const Access& a = lk_.accesses[st.access];
    int rt = root_of(s_, a.buffer);
    if (rb_ && staged(st.access)) {
      os_ << ind << "t" << st.access << "[i" << inner_[0] << "][r] = ("
          << dtype_c_type(s_.buffers[rt].dtype) << ")" << ref(st.expr) << ";\n";
      return;
    }
    os_ << ind << "p" << rt << "[" << index_code(st.access) << "] = ("
        << dtype_c_type(s_.buffers[rt].dtype) << ")" << ref(st.expr) << ";\n";
  }

  void emit_level(int level, const std::string& ind) {
    for (std::size_t i = 0; i < lk_.exprs.size(); ++i)
      if (lk_.exprs[i].level == level) emit_expr(static_cast<int>(i), ind);
  }

  bool is_inner_reduce(const Expr& e) const {
    return (e.kind == ExprKind::Reduce && !e.final) || e.kind == ExprKind::ArgReduce;
  }

  void outer_body(const std::string& ind) {
    const int n = static_cast<int>(lk_.exprs.size());
    // Outer values known before the first pass.
    for (int i = 0; i < n; ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 1 && e.phase == 0 && !is_inner_reduce(e)) emit_expr(i, ind);
    }
    if (!inner_.empty()) {
      // Outer values computed between passes stay in scope for the later passes and the tail.
      os_ << ind << "{\n";
      pass_cursor_ = -1;
      continue_pass(ind + "  ");
      os_ << ind << "}\n";
    } else {
      tail(ind);
    }
  }

  // Emits passes p+1.. and the tail inside the current block (outer values stay in scope).
  // Costly inner values (exp, log, division, ...) of a short static inner axis are computed
  // once into a row buffer by a loop of their own, which the compiler vectorises (with
  // libmvec's SIMD exp/log where available), and read back by the reduction loop and later
  // passes instead of being recomputed.
  bool cacheable(int i) const {
    if (!cache_rows_) return false;
    const Expr& e = lk_.exprs[i];
    if (e.level != 2 || e.kind != ExprKind::Scalar) return false;
    switch (e.op) {
      case ScalarOp::Exp:
      case ScalarOp::Log:
      case ScalarOp::Log1p:
      case ScalarOp::Tanh:
      case ScalarOp::Sigmoid:
      case ScalarOp::Softplus:
      case ScalarOp::Pow:
      case ScalarOp::Div:
      case ScalarOp::Sqrt:
      case ScalarOp::Inv:
        return is_float(e.dtype);
      default:
        return false;
    }
  }

  // Marks the inner values `roots` need; values cached in passes <= `upto` are leaves.
  void close_over(std::vector<bool>& need, int upto) const {
    const int n = static_cast<int>(lk_.exprs.size());
    for (int i = n - 1; i >= 0; --i) {
      if (!need[i]) continue;
      if (cached_in_[i] >= 0 && cached_in_[i] <= upto) continue;
      const Expr& e = lk_.exprs[i];
      for (std::size_t ai = 0; ai < e.args.size(); ++ai) {
        if (!e.reads_arg(ai)) continue;
        if (lk_.exprs[e.args[ai]].level == 2) need[e.args[ai]] = true;
      }
    }
  }

  void continue_pass(const std::string& ind) {
    const int n = static_cast<int>(lk_.exprs.size());
    const int p = ++pass_cursor_;
    if (p == 0) {
      cached_in_.assign(n, -1);
      cache_rows_ = inner_.size() == 1 && lk_.domain[inner_[0]].is_static() &&
                    lk_.domain[inner_[0]].size > 1 && lk_.domain[inner_[0]].size <= 4096;
    }
    std::vector<bool> need(n, false);
    std::vector<int> accs;
    for (int i = 0; i < n; ++i) {
      const Expr& e = lk_.exprs[i];
      if ((is_inner_reduce(e) || (e.kind == ExprKind::Reduce && e.final)) &&
          lk_.exprs[e.args[0]].level == 2 && lk_.exprs[e.args[0]].phase == p) {
        need[e.args[0]] = true;
        if (is_inner_reduce(e)) accs.push_back(i);
      }
    }
    // Inner values are stored in the last pass, after every read of this outer point in the
    // earlier passes: a value written in place over an input is never read back.
    const bool last_pass = p + 1 == lk_.passes;
    for (const Store& st : lk_.stores)
      if (lk_.exprs[st.expr].level == 2 && last_pass) need[st.expr] = true;
    close_over(need, p - 1);
    // New row buffers: costly values first needed in this pass.
    std::vector<bool> map_need(n, false);
    bool any_new = false;
    for (int i = 0; i < n; ++i)
      if (need[i] && cached_in_[i] < 0 && cacheable(i)) {
        cached_in_[i] = p;
        map_need[i] = true;
        any_new = true;
      }
    if (any_new) {
      close_over(map_need, p - 1);
      const int d = inner_[0];
      const std::string size = std::to_string(lk_.domain[d].size);
      for (int i = 0; i < n; ++i)
        if (cached_in_[i] == p)
          os_ << ind << dtype_c_type(lk_.exprs[i].dtype) << " ce" << i << "[" << size << "];\n";
      // Not unrolled first: a fully unrolled 10-iteration loop is no longer vectorised.
      os_ << ind << "#pragma GCC unroll 1\n";
      os_ << ind << "for (int64_t i" << d << " = 0; i" << d << " < " << size << "; ++i" << d
          << ") {  // row buffers (vectorised)\n";
      for (int i = 0; i < n; ++i) {
        if (!map_need[i]) continue;
        if (cached_in_[i] >= 0 && cached_in_[i] < p)
          os_ << ind << "  const " << dtype_c_type(lk_.exprs[i].dtype) << " e" << i << " = ce" << i
              << "[i" << d << "];\n";
        else
          emit_expr(i, ind + "  ");
      }
      for (int i = 0; i < n; ++i)
        if (cached_in_[i] == p) os_ << ind << "  ce" << i << "[i" << d << "] = e" << i << ";\n";
      os_ << ind << "}\n";
      // The reduction loop reads them back: recompute the closure with them as leaves.
      std::fill(need.begin(), need.end(), false);
      for (int i = 0; i < n; ++i) {
        const Expr& e = lk_.exprs[i];
        if ((is_inner_reduce(e) || (e.kind == ExprKind::Reduce && e.final)) &&
            lk_.exprs[e.args[0]].level == 2 && lk_.exprs[e.args[0]].phase == p)
          need[e.args[0]] = true;
      }
      for (const Store& st : lk_.stores)
        if (lk_.exprs[st.expr].level == 2 && last_pass) need[st.expr] = true;
      close_over(need, p);
    }
    os_ << ind << "// pass " << p << "\n";
    // Sums over a short static row use 4 partial accumulators (combined in a fixed order)
    // so consecutive additions do not wait on each other's latency.
    const bool split = cache_rows_ && lk_.domain[inner_[0]].size >= 8;
    for (int i : accs) {
      const Expr& e = lk_.exprs[i];
      if (e.kind == ExprKind::ArgReduce)
        os_ << ind << dtype_c_type(lk_.exprs[e.args[0]].dtype) << " b" << i << "{}; int64_t a" << i
            << " = -1; bool nan" << i << " = false;\n";
      else if (split)
        os_ << ind << acc_type(e) << " a" << i << "[4] = {" << acc_init(e) << ", " << acc_init(e)
            << ", " << acc_init(e) << ", " << acc_init(e) << "};\n";
      else
        os_ << ind << acc_type(e) << " a" << i << " = " << acc_init(e) << ";\n";
    }
    std::string body = ind;
    for (int d : inner_) {
      os_ << body << "for (int64_t i" << d << " = 0; i" << d << " < " << dim_code(lk_.domain[d])
          << "; ++i" << d << ") {\n";
      body += "  ";
    }
    for (int i = 0; i < n; ++i) {
      if (!need[i]) continue;
      if (cached_in_[i] >= 0 && cached_in_[i] <= p)
        os_ << body << "const " << dtype_c_type(lk_.exprs[i].dtype) << " e" << i << " = ce" << i
            << "[i" << inner_[0] << "];\n";
      else
        emit_expr(i, body);
    }
    for (int i : accs) {
      const Expr& e = lk_.exprs[i];
      const std::string x = ref(e.args[0]);
      if (e.kind == ExprKind::ArgReduce) {
        const std::string idx = "i" + std::to_string(e.axis);
        const std::string is = std::to_string(i);
        os_ << body << "if (a" << is << " < 0) { b" << is << " = " << x << "; a" << is << " = "
            << idx << "; nan" << is << " = !(" << x << " == " << x << "); }\n";
        os_ << body << "else if (!nan" << is << ") { if (!(" << x << " == " << x << ")) { b" << is
            << " = " << x << "; a" << is << " = " << idx << "; nan" << is << " = true; } else if ("
            << x << (e.is_max ? " > " : " < ") << "b" << is << ") { b" << is << " = " << x << "; a"
            << is << " = " << idx << "; } }\n";
      } else if (split) {
        const std::string slot =
            "a" + std::to_string(i) + "[i" + std::to_string(inner_[0]) + " & 3]";
        os_ << body << slot << " = " << combine(e, slot, x) << ";\n";
      } else {
        os_ << body << "a" << i << " = " << combine(e, "a" + std::to_string(i), x) << ";\n";
      }
    }
    for (int f : finals_) {
      const Expr& e = lk_.exprs[f];
      if (lk_.exprs[e.args[0]].level == 2 && lk_.exprs[e.args[0]].phase == p)
        os_ << body << "f" << f << " = " << combine(e, "f" + std::to_string(f), ref(e.args[0]))
            << ";\n";
    }
    for (const Store& st : lk_.stores)
      if (lk_.exprs[st.expr].level == 2 && last_pass) emit_store(st, body);
    for (std::size_t k = 0; k < inner_.size(); ++k) {
      body.resize(body.size() - 2);
      os_ << body << "}\n";
    }
    for (int i : accs) {
      const Expr& e = lk_.exprs[i];
      if (split && e.kind != ExprKind::ArgReduce) {
        const std::string a = "a" + std::to_string(i);
        os_ << ind << "const " << acc_type(e) << " a" << i << "s = "
            << combine(e, combine(e, a + "[0]", a + "[1]"), combine(e, a + "[2]", a + "[3]"))
            << ";\n";
        os_ << ind << "const " << dtype_c_type(e.dtype) << " e" << i << " = "
            << acc_value(e, "a" + std::to_string(i) + "s") << ";\n";
      } else {
        emit_expr(i, ind);
      }
    }
    for (int i = 0; i < n; ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 1 && e.phase == p + 1 && !is_inner_reduce(e)) emit_expr(i, ind);
    }
    if (p + 1 < lk_.passes)
      continue_pass(ind);
    else
      tail(ind);
  }

  // Row-block mode: a loop with one outer axis (rows) and one short static inner axis (the
  // tutorial's 10 classes) computes kRowBlock rows at once, every statement inside a loop over
  // the block's rows that the compiler vectorises across rows (with libmvec's exp/log). One
  // row at a time, a 10-element row fills only part of a vector and each of its reductions is
  // a short dependency chain. Each row's arithmetic is unchanged and final reductions still
  // see the rows in order.
  static constexpr int kRowBlock = 16;

  bool row_block_mode() const {
    if (outer_.size() != 1 || inner_.size() != 1) return false;
    const Dim& d = lk_.domain[inner_[0]];
    if (!d.is_static() || d.size < 1 || d.size > 64) return false;
    for (const Expr& e : lk_.exprs) {
      if (e.kind == ExprKind::ArgReduce || !e.index_args.empty()) return false;
      if (e.kind == ExprKind::Reduce && e.final && lk_.exprs[e.args[0]].level == 2) return false;
    }
    return true;
  }

  // Declares the arrays of the outer values in `ids`, then computes them (and the statements
  // `extra` prints) in one loop over the block's rows.
  // `simd`: the rows are independent (no accumulation across them), so the loop is marked
  // for vectorisation; otherwise the compiler fully unrolls the 16 rows first and then finds
  // straight-line code it does not vectorise.
  template <class Extra>
  void row_loop(const std::vector<int>& ids, const std::string& ind, Extra&& extra,
                bool simd = true) {
    for (int i : ids)
      if (lk_.exprs[i].level == 1)
        os_ << ind << dtype_c_type(lk_.exprs[i].dtype) << " e" << i << "[" << kRowBlock << "];\n";
    os_ << ind << (simd ? "THEA_SIMD " : "") << "for (int r = 0; r < nr; ++r) {\n";
    os_ << ind << "  const int64_t i" << outer_[0] << " = ib + r;\n";
    for (int i : ids) emit_expr(i, ind + "  ");
    extra(ind + "  ");
    os_ << ind << "}\n";
  }

  bool staged(int access) const {
    return access >= 0 && access < static_cast<int>(staged_.size()) && staged_[access];
  }

  // Row-block mode reads the block's rows across vector lanes: element (row r, column i) of
  // a row-major operand sits `row stride` apart from (r + 1, i), an access pattern compilers
  // do not vectorise. So every operand that varies along the row is copied once per block
  // into a [column][row] tile, and the passes read (and the last pass writes) tiles whose
  // rows are contiguous; written tiles are copied out after the passes.
  void plan_staging() {
    staged_.assign(lk_.accesses.size(), false);
    const int d = inner_[0];
    auto along_row = [&](int ai) {
      const Access& a = lk_.accesses[ai];
      return d < static_cast<int>(a.axis_of.size()) && a.axis_of[d] >= 0 &&
             stride_code(s_, a.buffer, a.axis_of[d]) != "INT64_C(0)";
    };
    std::int64_t bytes = 0;
    auto stage = [&](int ai, Dtype dt) {
      if (staged_[ai] || !along_row(ai)) return;
      const std::int64_t b = lk_.domain[d].size * kRowBlock * dtype_size(dt);
      if (bytes + b > kStagingBytes) return;
      bytes += b;
      staged_[ai] = true;
    };
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Load && e.level == 2) stage(e.access, e.dtype);
    for (const Store& st : lk_.stores)
      if (lk_.exprs[st.expr].level == 2)
        stage(st.access, s_.buffers[root_of(s_, lk_.accesses[st.access].buffer)].dtype);
  }

  // Copies between the block's rows of a staged operand and its tile.
  void emit_tile_copy(int ai, bool load, const std::string& ind) {
    const Access& a = lk_.accesses[ai];
    const int rt = root_of(s_, a.buffer);
    const std::string elem = "p" + std::to_string(rt) + "[" + index_code(ai) + "]";
    const std::string tile = "t" + std::to_string(ai) + "[i" + std::to_string(inner_[0]) + "][r]";
    os_ << ind << "for (int r = 0; r < nr; ++r) {\n"
        << ind << "  const int64_t i" << outer_[0] << " = ib + r;\n"
        << ind << "  for (int64_t i" << inner_[0] << " = 0; i" << inner_[0] << " < "
        << dim_code(lk_.domain[inner_[0]]) << "; ++i" << inner_[0] << ") " << (load ? tile : elem)
        << " = " << (load ? elem : tile) << ";\n"
        << ind << "}\n";
  }

  void outer_body_rb(const std::string& ind) {
    const int n = static_cast<int>(lk_.exprs.size());
    cached_in_.assign(n, -1);
    cache_rows_ = false;
    std::vector<bool> loaded(lk_.accesses.size(), false), stored(lk_.accesses.size(), false);
    for (const Expr& e : lk_.exprs)
      if (e.kind == ExprKind::Load && staged(e.access)) loaded[e.access] = true;
    for (const Store& st : lk_.stores)
      if (staged(st.access) && lk_.exprs[st.expr].level == 2) stored[st.access] = true;
    for (std::size_t ai = 0; ai < staged_.size(); ++ai) {
      if (!staged_[ai]) continue;
      const int rt = root_of(s_, lk_.accesses[ai].buffer);
      os_ << ind << dtype_c_type(s_.buffers[rt].dtype) << " t" << ai << "["
          << lk_.domain[inner_[0]].size << "][" << kRowBlock << "];\n";
      if (loaded[ai]) emit_tile_copy(static_cast<int>(ai), true, ind);
    }
    std::vector<int> first;
    for (int i = 0; i < n; ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 1 && e.phase == 0 && !is_inner_reduce(e)) first.push_back(i);
    }
    row_loop(first, ind, [](const std::string&) {});
    const int d = inner_[0];
    for (int p = 0; p < lk_.passes; ++p) {
      std::vector<bool> need(n, false);
      std::vector<int> accs;
      for (int i = 0; i < n; ++i) {
        const Expr& e = lk_.exprs[i];
        if (is_inner_reduce(e) && lk_.exprs[e.args[0]].level == 2 &&
            lk_.exprs[e.args[0]].phase == p) {
          need[e.args[0]] = true;
          accs.push_back(i);
        }
      }
      const bool last_pass = p + 1 == lk_.passes;
      for (const Store& st : lk_.stores)
        if (lk_.exprs[st.expr].level == 2 && last_pass) need[st.expr] = true;
      close_over(need, p - 1);
      os_ << ind << "// pass " << p << " (rows of the block vectorised)\n";
      for (int i : accs)
        os_ << ind << acc_type(lk_.exprs[i]) << " a" << i << "[" << kRowBlock << "];\n";
      os_ << ind << "THEA_SIMD for (int r = 0; r < nr; ++r) {\n";
      for (int i : accs) os_ << ind << "  a" << i << "[r] = " << acc_init(lk_.exprs[i]) << ";\n";
      os_ << ind << "}\n";
      os_ << ind << "for (int64_t i" << d << " = 0; i" << d << " < " << dim_code(lk_.domain[d])
          << "; ++i" << d << ") {\n";
      std::vector<int> inner_ids;
      for (int i = 0; i < n; ++i)
        if (need[i]) inner_ids.push_back(i);
      row_loop(inner_ids, ind + "  ", [&](const std::string& in) {
        for (int i : accs) {
          const std::string a = "a" + std::to_string(i) + "[r]";
          os_ << in << a << " = " << combine(lk_.exprs[i], a, ref(lk_.exprs[i].args[0])) << ";\n";
        }
        for (const Store& st : lk_.stores)
          if (lk_.exprs[st.expr].level == 2 && last_pass) emit_store(st, in);
      });
      os_ << ind << "}\n";
      if (last_pass)
        for (std::size_t ai = 0; ai < stored.size(); ++ai)
          if (stored[ai]) emit_tile_copy(static_cast<int>(ai), false, ind);
      std::vector<int> after = accs;
      for (int i = 0; i < n; ++i) {
        const Expr& e = lk_.exprs[i];
        if (e.level == 1 && e.phase == p + 1 && !is_inner_reduce(e)) after.push_back(i);
      }
      row_loop(after, ind, [](const std::string&) {});
    }
    std::vector<int> rest;
    for (int i = 0; i < n; ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 1 && e.phase > lk_.passes && !is_inner_reduce(e)) rest.push_back(i);
    }
    bool across_rows = false;  // a final reduction adds the rows in order
    for (int f : finals_) across_rows |= lk_.exprs[lk_.exprs[f].args[0]].level == 1;
    row_loop(
        rest, ind,
        [&](const std::string& in) {
          for (const Store& st : lk_.stores)
            if (lk_.exprs[st.expr].level == 1) emit_store(st, in);
          for (int f : finals_) {
            const Expr& e = lk_.exprs[f];
            if (lk_.exprs[e.args[0]].level == 1)
              os_ << in << "f" << f << " = " << combine(e, "f" + std::to_string(f), ref(e.args[0]))
                  << ";\n";
          }
        },
        !across_rows);
  }

  // After all passes: remaining outer values, outer stores, final accumulation of outer values.
  void tail(const std::string& ind) {
    const int n = static_cast<int>(lk_.exprs.size());
    const int last_phase = inner_.empty() ? 0 : lk_.passes;
    for (int i = 0; i < n; ++i) {
      const Expr& e = lk_.exprs[i];
      if (e.level == 1 && e.phase > last_phase && !is_inner_reduce(e)) emit_expr(i, ind);
    }
    for (const Store& st : lk_.stores)
      if (lk_.exprs[st.expr].level == 1) emit_store(st, ind);
    for (int f : finals_) {
      const Expr& e = lk_.exprs[f];
      if (lk_.exprs[e.args[0]].level == 1 || (inner_.empty() && lk_.exprs[e.args[0]].level == 2))
        os_ << ind << "f" << f << " = " << combine(e, "f" + std::to_string(f), ref(e.args[0]))
            << ";\n";
    }
    if (inner_.empty()) {
      // Without inner axes every varying value is computed once per point here.
      for (const Store& st : lk_.stores)
        if (lk_.exprs[st.expr].level == 2) emit_store(st, ind);
    }
  }

  const Schedule& s_;
  const Kernel& k_;
  const LoopKernel& lk_;
  std::ostringstream& os_;
  std::vector<int> finals_, inner_, outer_;
  std::vector<int> cached_in_;  // pass whose row-buffer loop computes each value, or -1
  bool cache_rows_ = false;
  bool rb_ = false;           // rendering a row block (row_block_mode)
  std::vector<bool> staged_;  // per access: copied to a [column][row] tile (plan_staging)
  static constexpr std::int64_t kStagingBytes = 32 * 1024;  // of stack per block, at most
  int pass_cursor_ = 0;
};

bool small_static(const Dim& d, std::int64_t limit) { return d.is_static() && d.size <= limit; }

// The runtime sizes a product's code reads from D (`const int64_t dN = D[N];`).
std::string gemm_syms_code(const GemmKernel& g) {
  std::set<int> syms;
  for (const Dim& d : {g.m, g.n, g.k})
    if (!d.is_static()) syms.insert(d.sym);
  std::string out;
  for (int sy : syms)
    out += "  const int64_t d" + std::to_string(sy) + " = D[" + std::to_string(sy) + "];\n";
  return out + "  (void)D;\n";
}

// A product's alpha or beta: a literal, or the scalar buffer read from P.
std::string scalar_arg_code(const Schedule& s, const ScalarArg& a, Dtype dtype) {
  if (a.is_const) return literal(a.value, dtype);
  return std::string("((const ") + dtype_c_type(dtype) + "*)P[" +
         std::to_string(root_of(s, a.buffer)) + "])[0]";
}

KernelCode render_gemm(const Schedule& s, const MemPlan& plan, const Kernel& k,
                       std::ostringstream& os, int vector_bytes) {
  const GemmKernel& g = k.gemm;
  KernelCode code;
  const bool flt = is_float(g.dtype);
  const char* T = dtype_c_type(g.dtype);
  const int lanes = vector_bytes / static_cast<int>(dtype_size(g.dtype));
  const int ra = root_of(s, g.a), rb = root_of(s, g.b), ro = root_of(s, g.out);
  const int rc = g.c_in >= 0 ? root_of(s, g.c_in) : -1;
  const bool in_place = g.c_in >= 0 && plan.buffers[g.out].placement == Placement::Alias &&
                        root_of(s, plan.buffers[g.out].alias) == rc;
  const std::string syms = gemm_syms_code(g);
  const std::string M = dim_code(g.m), N = dim_code(g.n), K = dim_code(g.k);
  // Row strides of the dense operands as stored: A is m x k (k x m when transposed).
  // A vector right operand is a 1 x K row: the product reads it transposed.
  const bool tb = g.trans_b || g.b_vector;
  const std::string lda = g.trans_a ? M : K;
  const std::string ldb = tb ? K : N;
  // prep: copy C_in into the output when the product does not run in place.
  std::string copy_c;
  if (g.c_in >= 0 && !in_place) {
    copy_c = std::string("  { const ") + T + "* c = (const " + T + "*)P[" + std::to_string(rc) +
             "]; " + T + "* o = (" + T + "*)P[" + std::to_string(ro) +
             "]; for (int64_t i = 0; i < " + M + " * " + N + "; ++i) o[i] = c[i]; }\n";
  }
  const std::string beta = g.c_in >= 0 ? scalar_arg_code(s, g.beta, g.dtype) : literal(0, g.dtype);
  const std::string alpha = scalar_arg_code(s, g.alpha, g.dtype);
  const bool nn_ok = flt && !g.trans_a && g.k.is_static() && g.k.size <= 1 << 20 &&
                     small_static(g.n, 16) && g.n.size > 0;
  const bool tn_ok =
      flt && g.trans_a && !tb && g.m.is_static() && small_static(g.n, 16) && g.n.size > 0;
  if (nn_ok || tn_ok) {
    code.launch = nn_ok ? Launch::GemmRows : Launch::GemmTN;
    code.fn = k.name;
    code.prep = k.name + "_prep";
    code.lanes = lanes;
    const bool bt_given = tb;  // B is stored N x K already
    if (nn_ok && !bt_given) code.scratch_bytes = g.n.size * g.k.size * dtype_size(g.dtype);
    os << "extern \"C\" void " << code.prep << "(void* const* P, const int64_t* D, void* S) {\n"
       << syms << copy_c;
    if (nn_ok && !bt_given)
      os << "  thea_k::pack_bt<" << T << ", " << g.k.size << ", " << g.n.size << ">((const " << T
         << "*)P[" << rb << "], " << ldb << ", (" << T << "*)S);\n";
    os << "  (void)P; (void)S;\n}\n";
    if (nn_ok) {
      // Rows [i0, i1) of C against B transposed (N x K): for the part function below, and
      // for a row chain that keeps B transposed itself.
      os << "static inline void " << k.name << "_rows(void* const* P, const int64_t* D, const " << T
         << "* bt, int64_t i0, int64_t i1) {\n"
         << syms << "  thea_k::gemm_nn_smalln<" << T << ", " << g.k.size << ", " << g.n.size
         << ">(i0, i1, (const " << T << "*)P[" << ra << "], " << lda << ", bt, INT64_C(" << g.k.size
         << "), (" << T << "*)P[" << ro << "], " << N << ", " << alpha << ", " << beta << ");\n}\n";
    }
    os << "extern \"C\" void " << code.fn
       << "(void* const* P, const int64_t* D, void* S, int part, int nparts) {\n"
       << syms;
    if (nn_ok) {
      os << "  const int64_t m = " << M << ";\n"
         << "  const int64_t i0 = m * part / nparts, i1 = m * (part + 1) / nparts;\n"
         << "  " << k.name << "_rows(P, D, "
         << (bt_given ? std::string("(const ") + T + "*)P[" + std::to_string(rb) + "]"
                      : std::string("(const ") + T + "*)S")
         << ", i0, i1);\n";
    } else {
      // C (m x n) = alpha * A^T (A: k x m) . B (k x n): chunks of `lanes` rows of C per part.
      os << "  const int64_t m = " << M << ";\n"
         << "  const int64_t chunks = (m + " << lanes - 1 << ") / " << lanes << ";\n"
         << "  const int64_t c0 = chunks * part / nparts * " << lanes
         << ", c1e = chunks * (part + 1) / nparts * " << lanes << ";\n"
         << "  const int64_t c1 = c1e < m ? c1e : m;\n"
         << "  if (c0 < c1) thea_k::gemm_tn_smalln<" << T << ", " << g.m.size << ", " << g.n.size
         << ">(c0, c1, " << K << ", (const " << T << "*)P[" << ra << "], " << lda << ", (const "
         << T << "*)P[" << rb << "], " << ldb << ", (" << T << "*)P[" << ro << "], " << N << ", "
         << alpha << ", " << beta << ");\n";
    }
    os << "  (void)S;\n}\n\n";
    return code;
  }
  if (flt) {
    code.launch = Launch::Blas;
    if (!copy_c.empty()) {
      code.prep = k.name + "_prep";
      os << "extern \"C\" void " << code.prep << "(void* const* P, const int64_t* D, void* S) {\n"
         << syms << copy_c << "  (void)P; (void)S;\n}\n\n";
    }
    return code;
  }
  // Integer products: a plain loop over rows of C.
  code.launch = Launch::GemmRows;
  code.fn = k.name;
  code.prep = k.name + "_prep";
  os << "extern \"C\" void " << code.prep << "(void* const* P, const int64_t* D, void* S) {\n"
     << syms << copy_c << "  (void)P; (void)S;\n}\n";
  const std::string sa0 = g.trans_a ? "INT64_C(1)" : lda, sa1 = g.trans_a ? lda : "INT64_C(1)";
  const std::string sb0 = tb ? "INT64_C(1)" : ldb, sb1 = tb ? ldb : "INT64_C(1)";
  os << "extern \"C\" void " << code.fn
     << "(void* const* P, const int64_t* D, void* S, int part, int nparts) {\n"
     << syms << "  const int64_t m = " << M << ";\n"
     << "  thea_k::gemm_generic<" << T << ">(m * part / nparts, m * (part + 1) / nparts, " << N
     << ", " << K << ", (const " << T << "*)P[" << ra << "], " << sa0 << ", " << sa1 << ", (const "
     << T << "*)P[" << rb << "], " << sb0 << ", " << sb1 << ", (" << T << "*)P[" << ro << "], " << N
     << ", INT64_C(1), " << alpha << ", " << beta << ");\n  (void)S;\n}\n\n";
  return code;
}

std::int64_t align64(std::int64_t n) { return (n + 63) / 64 * 64; }

// The offsets of chain_scratch_bytes' layout, as generated code computing them from nparts.
std::string loop_offset_code(const KernelCode& head) {
  return "INT64_C(" + std::to_string(align64(head.scratch_bytes)) + ")";
}
std::string part_offset_code(const KernelCode& head) {
  return "(" + loop_offset_code(head) + " + ((int64_t)nparts * " + std::to_string(head.finals) +
         " * 8 + 63) / 64 * 64)";
}

// The shared variable W of a training step's chain, when the chain may keep it transposed
// (N x K) between calls: the head reads it as B (and would pack it every call), the reducing
// product updates it in place, and nothing else in the function reads, writes, views or
// returns it. Returns W's buffer, or -1. The Program keeps the transposed copy as W's
// SharedState mirror, so the row-major value is rebuilt only when something else reads it.
int transposed_weight(const Schedule& s, const MemPlan& plan, const RowChain& c,
                      const KernelCode& head) {
  const GemmKernel& g = s.kernels[c.gemm].gemm;
  const GemmKernel& t = s.kernels[c.reduce_gemm].gemm;
  if (head.scratch_bytes == 0 || g.trans_b || g.b_vector || t.c_in < 0) return -1;
  const int w = g.b;
  if (s.buffers[w].kind != BufferKind::Shared || t.c_in != w || t.dtype != g.dtype) return -1;
  if (t.m.size != g.k.size || t.n.size != g.n.size) return -1;
  // W's storage holds W and the in-place product only.
  if (storage_shared(s, plan, w, t.out)) return -1;
  if (plan.buffers[t.out].placement != Placement::Alias || plan.buffers[t.out].alias < 0 ||
      root_of(s, plan.buffers[t.out].alias) != w)
    return -1;
  for (std::size_t k = 0; k < s.kernels.size(); ++k) {
    const int ki = static_cast<int>(k);
    if (ki == c.gemm || ki == c.reduce_gemm) continue;
    for (const std::vector<int>* list : {&s.kernels[k].reads, &s.kernels[k].writes})
      for (int b : *list)
        if (b == w || b == t.out) return -1;
  }
  if (g.a == w || t.a == w || t.b == w) return -1;
  for (int o : s.outputs)
    if (o == w || o == t.out) return -1;
  bool updated = false;
  for (std::size_t u = 0; u < s.update_targets.size(); ++u) {
    if (s.update_values[u] == w) return -1;  // another variable takes W's old value
    if (s.update_targets[u] == w)
      updated =
          s.update_values[u] == t.out && u < plan.update_inplace.size() && plan.update_inplace[u];
  }
  return updated ? w : -1;
}

// Renders a RowChain as one part function, a finish and (when the chain reduces) a combine
// over the members' code: each part runs the head product on its rows, then the loop on the
// same rows, then its share of Aᵀ·D into a private partial; the finish combines the loop's
// partials; the combine adds the parts' products in part order, split into ranges that the
// threads take (it runs after the finish: the loop's finish may read the old weights).
// Returns false (members keep their own launches) when the members were not rendered as
// generated row products.
bool render_chain(const Schedule& s, const MemPlan& plan, const RowChain& c, int prefetch_slot,
                  std::vector<KernelCode>& codes, std::ostringstream& os) {
  KernelCode& head = codes[c.gemm];
  KernelCode& loop = codes[c.loop];
  if (head.launch != Launch::GemmRows || loop.launch != Launch::Loop) return false;
  const bool reduces = c.reduce_gemm >= 0 && codes[c.reduce_gemm].launch == Launch::GemmTN;
  const GemmKernel& g = s.kernels[c.gemm].gemm;
  // THEA_CPU_TRANSPOSED=0 keeps W row-major (packed every call), for comparisons.
  const int transposed = reduces && !env_switched_off("THEA_CPU_TRANSPOSED")
                             ? transposed_weight(s, plan, c, head)
                             : -1;
  const std::string name = s.kernels[c.gemm].name + "_chain";
  KernelCode chain = head;
  chain.launch = Launch::Chain;
  chain.fn = name;
  chain.finish = name + "_finish";
  chain.finals = loop.finals;
  chain.chain_reduces = reduces;
  if (transposed >= 0) {
    // B is read as stored (N x K): no packing, so no prep and no packed-operand scratch.
    chain.chain_transposed = transposed;
    chain.prep.clear();
    chain.scratch_bytes = 0;
  }
  os << "extern \"C\" void " << chain.fn
     << "(void* const* P, const int64_t* D, void* S, int part, int nparts) {\n";
  // The part's rows [i0, i1), read by the reducing product (and the head, when it runs here).
  if (reduces)
    os << gemm_syms_code(g) << "  const int64_t m = " << dim_code(g.m) << ";\n"
       << "  const int64_t i0 = m * part / nparts, i1 = m * (part + 1) / nparts;\n";
  if (transposed >= 0)
    os << "  " << s.kernels[c.gemm].name << "_rows(P, D, (const " << dtype_c_type(g.dtype) << "*)P["
       << transposed << "], i0, i1);\n";
  else
    os << "  " << head.fn << "(P, D, S, part, nparts);\n";
  os << "  " << loop.fn << "(P, D, (unsigned char*)S + " << loop_offset_code(chain)
     << ", part, nparts);\n";
  if (reduces) {
    const GemmKernel& t = s.kernels[c.reduce_gemm].gemm;
    const char* T = dtype_c_type(t.dtype);
    const std::int64_t km = t.m.size, kn = t.n.size;  // static: rendered as GemmTN
    chain.chain_part_bytes = km * kn * static_cast<std::int64_t>(dtype_size(t.dtype));
    const std::string lda = dim_code(g.k), ldd = dim_code(t.n);
    os << "  " << T << "* mine = (" << T << "*)((unsigned char*)S + " << part_offset_code(chain)
       << ") + (int64_t)part * " << km * kn << ";\n"
       << "  const " << T << "* a = (const " << T << "*)P[" << root_of(s, t.a) << "];\n"
       << "  // The rows after A in its array (D[" << prefetch_slot
       << "] of them): the next minibatch.\n"
       << "  const int64_t ahead = D[" << prefetch_slot << "] - i0;\n";
    const std::string operands = "a + i0 * " + lda + ", " + lda + ", (const " + T + "*)P[" +
                                 std::to_string(root_of(s, t.b)) + "] + i0 * " + ldd + ", " + ldd;
    // Partials share the layout of the value they are added to: transposed with B.
    if (transposed >= 0)
      os << "  thea_k::gemm_tn_smalln_t<" << T << ", " << km << ", " << kn << ">(i1 - i0, "
         << operands << ", mine, " << km << ", a + (m + i0) * " << lda
         << ", ahead > 0 ? ahead : 0);\n";
    else
      os << "  thea_k::gemm_tn_smalln<" << T << ", " << km << ", " << kn << ">(0, " << km
         << ", i1 - i0, " << operands << ", mine, " << kn << ", (" << T << ")1, (" << T
         << ")0, a + (m + i0) * " << lda << ", ahead > 0 ? ahead : 0);\n";
    chain.chain_prefetch_slot = prefetch_slot;
  }
  os << "}\n\n";
  os << "extern \"C\" void " << chain.finish
     << "(void* const* P, const int64_t* D, void* S, int nparts) {\n";
  if (!loop.finish.empty())
    os << "  " << loop.finish << "(P, D, (unsigned char*)S + " << loop_offset_code(chain)
       << ", nparts);\n";
  os << "  (void)P; (void)D; (void)S; (void)nparts;\n}\n\n";
  if (reduces) {
    // The parts' products summed in part order, then the update; split into `nsplit` ranges
    // of whole cache lines, so each thread also moves only its share of the partials between
    // cores. Elementwise, so the split never changes a result.
    const GemmKernel& t = s.kernels[c.reduce_gemm].gemm;
    const char* T = dtype_c_type(t.dtype);
    const std::int64_t n = t.m.size * t.n.size;
    const std::int64_t line = std::max<std::int64_t>(1, 64 / dtype_size(t.dtype));
    chain.combine = name + "_combine";
    os << "extern \"C\" void " << chain.combine
       << "(void* const* P, const int64_t* D, void* S, int part, int nsplit, int nparts) {\n"
       << "  const int64_t lines = INT64_C(" << (n + line - 1) / line << ");\n"
       << "  const int64_t i0 = lines * part / nsplit * " << line
       << ", i1e = lines * (part + 1) / nsplit * " << line << ";\n"
       << "  const int64_t i1 = i1e < " << n << " ? i1e : " << n << ";\n"
       << "  const " << T << "* part0 = (const " << T << "*)((unsigned char*)S + "
       << part_offset_code(chain) << ");\n"
       << "  const " << T << " alpha = " << scalar_arg_code(s, t.alpha, t.dtype) << ";\n"
       << "  " << T << "* out = (" << T << "*)P[" << root_of(s, t.out) << "];\n";
    const std::string update = t.c_in >= 0 ? "alpha * s + beta * c[i]" : std::string("alpha * s");
    if (t.c_in >= 0)
      os << "  const " << T << " beta = " << scalar_arg_code(s, t.beta, t.dtype) << ";\n"
         << "  const " << T << "* c = (const " << T << "*)P[" << root_of(s, t.c_in) << "];\n";
    // One pass that only reads the partials: writing the sum back into part 0's partial
    // would pull those lines from the core that wrote them, for ownership.
    os << "  if (nparts == 2) {\n"
       << "    const " << T << "* part1 = part0 + " << n << ";\n"
       << "    for (int64_t i = i0; i < i1; ++i) {\n"
       << "      const " << T << " s = part0[i] + part1[i];\n"
       << "      out[i] = " << update << ";\n"
       << "    }\n"
       << "  } else {\n"
       << "    for (int64_t i = i0; i < i1; ++i) {\n"
       << "      " << T << " s = part0[i];\n"
       << "      for (int p = 1; p < nparts; ++p) s += part0[(int64_t)p * " << n << " + i];\n"
       << "      out[i] = " << update << ";\n"
       << "    }\n"
       << "  }\n";
    os << "  (void)D;\n}\n\n";
  }
  head = chain;
  loop.launch = Launch::Absorbed;
  if (reduces) codes[c.reduce_gemm].launch = Launch::Absorbed;
  return true;
}

}  // namespace

bool env_switched_off(const char* name) {
  const char* v = std::getenv(name);
  return v && std::string(v) == "0";
}

std::int64_t chain_scratch_bytes(const KernelCode& chain, int nparts) {
  return align64(chain.scratch_bytes) + align64(std::int64_t{nparts} * chain.finals * 8) +
         std::int64_t{nparts} * chain.chain_part_bytes;
}

Rendered render(const Schedule& s, const MemPlan& plan, int vector_bytes) {
  Rendered out;
  std::ostringstream body;
  bool any = false;
  for (const Kernel& k : s.kernels) {
    KernelCode code;
    if (k.kind == KernelKind::Loop) {
      code = LoopRenderer(s, k, body).render();
      any = true;
    } else if (k.kind == KernelKind::Gemm) {
      code = render_gemm(s, plan, k, body, vector_bytes);
      if (!code.fn.empty() || !code.prep.empty()) any = true;
    } else {
      code.launch = Launch::Host;
    }
    out.kernels.push_back(code);
  }
  // Chains read the rows available after their A operand from D, after the symbols.
  // THEA_CPU_CHAINS=0 launches the members separately (comparisons, debugging).
  const bool chains = !env_switched_off("THEA_CPU_CHAINS");
  for (std::size_t i = 0; chains && i < s.row_chains.size(); ++i)
    render_chain(s, plan, s.row_chains[i], s.num_syms + static_cast<int>(i), out.kernels, body);
  if (!any) return out;
  if (!scalar_preamble() || !kernels_preamble())
    throw BackendError(
        "cpu backend: built without its kernel preamble (include third_party/CpuBackend.cmake "
        "from the top-level CMakeLists.txt)");
  std::ostringstream src;
  src << "// thea cpu kernels (generated)\n#define THEA_VEC_BYTES " << vector_bytes << "\n"
      << "// Loops over independent rows (OpenMP's simd pragma, enabled by -fopenmp-simd).\n"
         "#define THEA_SIMD _Pragma(\"omp simd\")\n"
      << scalar_preamble() << "\n"
      << kernels_preamble() << "\n"
      << "#if defined(THEA_USE_LIBMVEC)\n"
         "// glibc's SIMD variants: GCC vectorises loops calling these (no -ffast-math needed).\n"
         "extern \"C\" {\n"
         "float expf(float) __attribute__((simd(\"notinbranch\")));\n"
         "double exp(double) __attribute__((simd(\"notinbranch\")));\n"
         "float logf(float) __attribute__((simd(\"notinbranch\")));\n"
         "double log(double) __attribute__((simd(\"notinbranch\")));\n"
         "}\n"
         "#endif\n"
      << "\n"
      << body.str();
  out.source = src.str();
  return out;
}

}  // namespace thea::cpu
