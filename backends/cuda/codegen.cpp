#include "cuda/codegen.hpp"

#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "cuda/kernel_cache.hpp"
#include "cuda/kernel_writer.hpp"
#include "cuda/nvrtc_compiler.hpp"
#include "disk_cache.hpp"
#include "thea/error.hpp"
#include "thea/ops/fused.hpp"
#include "thea/ops/ops.hpp"
#include "thea/ops/scalar.hpp"

namespace thea::cuda {

std::string nvrtc_source(const std::string& body) {
  return kernel_prelude() + kKernelLib + "\n" + body;
}

std::string emu_source(const std::string& body) {
  return std::string(kEmuAbi) + "\n" + kEmuDevice + "\n" + kScalarPreamble + "\n" + kKernelLib +
         "\n" + body;
}

namespace {

using W = ParamWord::Kind;

template <class T>
const T* op_as(const NodePtr& n) {
  return n->kind == NodeKind::Apply ? dynamic_cast<const T*>(n->op.get()) : nullptr;
}

Dtype promote_all(const std::vector<Dtype>& ds) {
  Dtype p = ds[0];
  for (std::size_t i = 1; i < ds.size(); ++i) p = promote(p, ds[i]);
  return p;
}

// The expression computing elementwise node n from its inputs' variables: the same functor
// and the same dtype conversions as Elemwise::perform.
std::string elemwise_expr(const Elemwise& e, const NodePtr& n, const std::vector<std::string>& in) {
  const ScalarOp sop = e.scalar_op();
  const ScalarOpInfo& info = scalar_info(sop);
  std::vector<Dtype> dt;
  for (const NodePtr& i : n->inputs) dt.push_back(i->type.dtype);
  std::vector<int> vals;
  if (sop == ScalarOp::Switch)
    vals = {1, 2};
  else if (sop == ScalarOp::Second)
    vals = {1};
  else
    for (std::size_t i = 0; i < dt.size(); ++i) vals.push_back(static_cast<int>(i));
  std::vector<Dtype> vd;
  for (int i : vals) vd.push_back(dt[static_cast<std::size_t>(i)]);
  Dtype ct;
  switch (info.out) {
    case ScalarOutKind::Bool:
      ct = promote_all(vd);
      break;
    case ScalarOutKind::Explicit:
      ct = dt[0];
      break;
    default:
      ct = n->type.dtype;
      break;
  }
  const std::string CT = dtype_c_type(ct);
  auto conv = [&](int i) { return "(" + CT + ")(" + in[static_cast<std::size_t>(i)] + ")"; };
  const std::string f = info.functor;
  switch (sop) {
    case ScalarOp::Cast:
      return f + "<" + dtype_c_type(n->type.dtype) + ", " + dtype_c_type(dt[0]) + ">(" + in[0] +
             ")";
    case ScalarOp::Second:
      return f + "<" + dtype_c_type(dt[0]) + ", " + CT + ">(" + in[0] + ", " + conv(1) + ")";
    case ScalarOp::Switch:
      return f + "<" + dtype_c_type(dt[0]) + ", " + CT + ">(" + in[0] + ", " + conv(1) + ", " +
             conv(2) + ")";
    case ScalarOp::Pow:
      if (!is_float(ct))  // host std::pow on integers computes in double
        return "(" + CT + ")" + f + "<double>((double)(" + in[0] + "), (double)(" + in[1] + "))";
      return "(" + CT + ")" + f + "<" + CT + ">(" + conv(0) + ", " + conv(1) + ")";
    default: {
      std::string s = f + "<" + CT + ">(";
      for (int i = 0; i < info.arity; ++i) s += (i ? ", " : "") + conv(i);
      return s + ")";
    }
  }
}

// Emits the fused nodes of a step (inputs first) as SSA variables.
void emit_fused(KernelWriter& kw, const std::string& indent) {
  for (const NodePtr& f : kw.step_.fused) {
    int v = kw.plan_.index.at(f.get());
    std::vector<std::string> in;
    for (const NodePtr& i : f->inputs) in.push_back(KernelWriter::var(kw.plan_.index.at(i.get())));
    const auto* e = op_as<Elemwise>(f);
    if (!e) throw Error("cuda codegen: fused node " + f->describe() + " is not elementwise");
    kw.body << indent << "const " << dtype_c_type(f->type.dtype) << " " << KernelWriter::var(v)
            << " = " << elemwise_expr(*e, f, in) << ";\n";
  }
}

// Loads every operand of a kernel at the current index: `linear` for full operands, else
// the sum of coords[d] * stride(d) over the index space (strides as parameter words).
void emit_loads(KernelWriter& kw, const std::string& indent, const std::string& linear,
                const std::vector<std::string>& coords, int rank) {
  for (const Operand& o : kw.step_.operands) {
    const Value& ov = kw.val(o.value);
    const std::string T = dtype_c_type(ov.node->type.dtype);
    std::string rhs;
    if (ov.place == Place::Host) {
      rhs = kw.host_scalar(o.value);
    } else if (o.full) {
      rhs = kw.ptr(o.value) + "[" + linear + "]";
    } else {
      std::string off;
      for (int d = 0; d < rank; ++d) {
        if (!off.empty()) off += " + ";
        off += coords[static_cast<std::size_t>(d)] + " * " + kw.word_space_stride(o.value, d, rank);
      }
      rhs = kw.ptr(o.value) + "[" + (off.empty() ? "0" : off) + "]";
    }
    kw.body << indent << "const " << T << " " << KernelWriter::var(o.value) << " = " << rhs
            << ";\n";
  }
}

bool all_full(const Step& st, const Plan& plan) {
  for (const Operand& o : st.operands)
    if (!o.full && plan.values[static_cast<std::size_t>(o.value)].place != Place::Host)
      return false;
  return true;
}

// coords c0..c{rank-1} of linear index `lin` over the dims of value `space`.
std::vector<std::string> emit_coords(KernelWriter& kw, const std::string& indent,
                                     const std::string& lin, int space, int rank,
                                     const std::string& prefix) {
  std::vector<std::string> c(static_cast<std::size_t>(rank));
  if (rank == 0) return c;
  kw.body << indent << "long long " << prefix << "r = " << lin << ";\n";
  for (int d = rank - 1; d >= 0; --d) {
    c[static_cast<std::size_t>(d)] = prefix + std::to_string(d);
    if (d > 0) {
      std::string dim = kw.word_dim(space, d);
      kw.body << indent << "const long long " << c[static_cast<std::size_t>(d)] << " = " << prefix
              << "r % " << dim << "; " << prefix << "r /= " << dim << ";\n";
    } else {
      kw.body << indent << "const long long " << c[0] << " = " << prefix << "r;\n";
    }
  }
  return c;
}

const char* kHeader = "extern \"C\" __global__ void __launch_bounds__(1024) ";
// Kernels holding up to 32 per-thread sums (skinny gemm, row kernels computing a product):
// their configurations never exceed 256 threads, and the tighter bound leaves the compiler
// 255 registers a thread instead of 64, so the sums stay out of local memory.
const char* kHeader256 = "extern \"C\" __global__ void __launch_bounds__(256) ";

std::string grid_loop(const std::string& n) {
  return "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < " + n +
         "; i += (long long)gridDim.x * blockDim.x) {\n";
}

void render_map(KernelWriter& kw) {
  Step& st = kw.step_;
  const int rank = st.index_rank;
  const std::string n = kw.word_numel(st.out);
  kw.body << grid_loop(n);
  std::vector<std::string> coords;
  if (!all_full(st, kw.plan_)) coords = emit_coords(kw, "    ", "i", st.out, rank, "c");
  emit_loads(kw, "    ", "i", coords, rank);
  emit_fused(kw, "    ");
  kw.body << "    " << kw.out_ptr() << "[i] = " << KernelWriter::var(st.out) << ";\n  }\n";
}

void render_copy(KernelWriter& kw) {
  Step& st = kw.step_;
  const int src = st.operands[0].value;
  const int rank = st.index_rank;
  const std::string n = kw.word_numel(src);
  kw.body << grid_loop(n);
  auto coords = emit_coords(kw, "    ", "i", src, rank, "c");
  std::string off;
  for (int d = 0; d < rank; ++d)
    off += (off.empty() ? "" : " + ") + coords[static_cast<std::size_t>(d)] + " * " +
           kw.word_stride(src, d);
  kw.body << "    " << kw.out_ptr() << "[i] = " << kw.ptr(src) << "[" << (off.empty() ? "0" : off)
          << "];\n  }\n";
}

struct ReduceShape {
  std::vector<int> kept, reduced;
};

ReduceShape reduce_axes(int rank, const std::vector<int>& axes_or_all) {
  ReduceShape r;
  for (int d = 0; d < rank; ++d) {
    bool red = axes_or_all.empty() ||
               std::find(axes_or_all.begin(), axes_or_all.end(), d) != axes_or_all.end();
    (red ? r.reduced : r.kept).push_back(d);
  }
  return r;
}

// Shared skeleton of the segment kernels: rows of `len` elements; for each element the
// operands are loaded and the fused expression evaluated; `body_fn(value_expr)` accumulates.
struct SegmentLoop {
  std::string rows, len;
  std::vector<std::string> kept_dims;  // words
  std::vector<std::string> red_dims;
};

// Emits row decomposition and per-operand base offsets (inside `if (valid)`), returns the
// per-element load code generator.
void emit_segment_prologue(KernelWriter& kw, const ReduceShape& rs, int space,
                           std::map<int, std::string>* bases) {
  Step& st = kw.step_;
  const std::string ind = "      ";
  // kept coordinates
  if (!rs.kept.empty()) {
    kw.body << ind << "long long kr = row;\n";
    for (int k = static_cast<int>(rs.kept.size()) - 1; k >= 0; --k) {
      int axis = rs.kept[static_cast<std::size_t>(k)];
      std::string dim = kw.word_dim(space, axis);
      kw.body << ind << "const long long k" << axis << " = kr % " << dim << "; kr /= " << dim
              << ";\n";
    }
  }
  for (const Operand& o : st.operands) {
    if (o.full || kw.val(o.value).place == Place::Host) continue;
    std::string b = "ob" + std::to_string(o.value);
    std::string e = "0";
    for (int axis : rs.kept)
      e += " + k" + std::to_string(axis) + " * " +
           kw.word_space_stride(o.value, axis, st.index_rank);
    kw.body << ind << "const long long " << b << " = " << e << ";\n";
    (*bases)[o.value] = b;
  }
}

void emit_segment_loads(KernelWriter& kw, const ReduceShape& rs, int space,
                        const std::map<int, std::string>& bases, const std::string& ind) {
  Step& st = kw.step_;
  bool need_coords = false;
  for (const Operand& o : st.operands)
    if (!o.full && kw.val(o.value).place != Place::Host) need_coords = true;
  if (need_coords && !rs.reduced.empty()) {
    kw.body << ind << "long long jr = j;\n";
    for (int k = static_cast<int>(rs.reduced.size()) - 1; k >= 0; --k) {
      int axis = rs.reduced[static_cast<std::size_t>(k)];
      std::string dim = kw.word_dim(space, axis);
      kw.body << ind << "const long long a" << axis << " = jr % " << dim << "; jr /= " << dim
              << ";\n";
    }
  }
  for (const Operand& o : st.operands) {
    const Value& ov = kw.val(o.value);
    const std::string T = dtype_c_type(ov.node->type.dtype);
    std::string rhs;
    if (ov.place == Place::Host) {
      rhs = kw.host_scalar(o.value);
    } else if (o.full) {
      rhs = kw.ptr(o.value) + "[row * len + j]";
    } else {
      std::string off = bases.at(o.value);
      for (int axis : rs.reduced)
        off += " + a" + std::to_string(axis) + " * " +
               kw.word_space_stride(o.value, axis, st.index_rank);
      rhs = kw.ptr(o.value) + "[" + off + "]";
    }
    kw.body << ind << "const " << T << " " << KernelWriter::var(o.value) << " = " << rhs << ";\n";
  }
  emit_fused(kw, ind);
}

std::string segment_head(KernelWriter& kw, int space, const ReduceShape& rs) {
  std::string rows = kw.word_prod(space, rs.kept);
  std::string len = kw.word_prod(space, rs.reduced);
  std::ostringstream os;
  os << "  THEA_DYN_SMEM(thea_smem);\n"
     << "  const long long rows = " << rows << ", len = " << len << ";\n"
     << "  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows;"
     << " base += (long long)gridDim.x * blockDim.y) {\n"
     << "    const long long row = base + threadIdx.y;\n"
     << "    const bool valid = row < rows;\n";
  return os.str();
}

// Generated code: `T acc[NC]` holding this thread's share of the NC dot products of row
// `row` of A with B's columns, over q = first, first + step, ... < last, in that order
// (`guard`, when not empty, skips the loop for rows past the end). A, B and their strides
// as_i/as_q/bs_q/bs_j are the kernel's names for the product's operands.
std::string row_dot_code(const std::string& ind, const std::string& T, const std::string& row,
                         const std::string& first, const std::string& last, const std::string& step,
                         const std::string& guard) {
  const std::string loop_ind = guard.empty() ? ind : ind + "  ";
  std::string s = ind + T + " acc[NC];\n" + ind +
                  "THEA_UNROLL for (int j = 0; j < NC; ++j) acc[j] = (" + T + ")0;\n";
  if (!guard.empty()) s += ind + "if (" + guard + ")\n";
  s += loop_ind + "for (long long q = " + first + "; q < " + last + "; q += " + step + ") {\n" +
       loop_ind + "  const " + T + " x = A[" + row + " * as_i + q * as_q];\n" + loop_ind +
       "  const " + T + "* bq = B + q * bs_q;\n" + loop_ind +
       "  THEA_UNROLL for (int j = 0; j < NC; ++j) acc[j] += x * bq[j * bs_j];\n" + loop_ind +
       "}\n";
  return s;
}

// Generated code: each acc[j] summed over the 32 lanes of the warp (a fixed shuffle tree).
std::string warp_sum_code(const std::string& ind) {
  return ind + "THEA_UNROLL for (int j = 0; j < NC; ++j)\n" + ind +
         "  for (int off = 16; off > 0; off /= 2)\n" + ind +
         "    acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], off, 32);\n";
}

void render_reduce(KernelWriter& kw) {
  Step& st = kw.step_;
  const NodePtr& n = st.node;
  const auto* r = op_as<Reduce>(n);
  const int space = kw.plan_.index.at(n->inputs[0].get());
  const Dtype in = n->inputs[0]->type.dtype, out = n->type.dtype;
  ReduceShape rs = reduce_axes(st.index_rank, r->axes());
  std::string acc_t, init, op, fin;
  const std::string v = KernelWriter::var(space);
  std::string combine;
  switch (r->kind()) {
    case ReduceKind::Sum:
    case ReduceKind::Mean:
      if (is_float(in) || r->kind() == ReduceKind::Mean) {
        acc_t = "double";
        init = "0.0";
        combine = "acc = acc + (double)" + v;
        op = "thea_op_add<double>()";
        fin = r->kind() == ReduceKind::Mean ? "acc / (double)len" : "acc";
      } else {
        acc_t = "unsigned long long";
        init = "0ull";
        combine = "acc = acc + (unsigned long long)(long long)" + v;
        op = "thea_op_add<unsigned long long>()";
        fin = "(long long)acc";
      }
      break;
    case ReduceKind::Prod:
      if (is_float(in)) {
        acc_t = "double";
        init = "1.0";
        combine = "acc = acc * (double)" + v;
        op = "thea_op_mul<double>()";
      } else {
        acc_t = "unsigned long long";
        init = "1ull";
        combine = "acc = acc * (unsigned long long)(long long)" + v;
        op = "thea_op_mul<unsigned long long>()";
      }
      fin = is_float(in) ? "acc" : "(long long)acc";
      break;
    case ReduceKind::Max:
    case ReduceKind::Min: {
      const bool mx = r->kind() == ReduceKind::Max;
      if (is_float(in)) {
        acc_t = dtype_c_type(in);
        init = mx ? "thea_neg_inf<" + acc_t + ">()" : "(-thea_neg_inf<" + acc_t + ">())";
      } else {
        acc_t = (in == Dtype::Bool || in == Dtype::UInt8) ? "int" : dtype_c_type(in);
        init = "(" + acc_t + ")" + int_limit(in, !mx);
      }
      const std::string f = mx ? "thea_maximum" : "thea_minimum";
      combine = "acc = " + f + "<" + acc_t + ">(acc, (" + acc_t + ")" + v + ")";
      op = std::string(mx ? "thea_op_max<" : "thea_op_min<") + acc_t + ">()";
      fin = "acc";
      break;
    }
  }
  kw.body << segment_head(kw, space, rs);
  kw.body << "    " << acc_t << " acc = " << init << ";\n    if (valid) {\n";
  std::map<int, std::string> bases;
  emit_segment_prologue(kw, rs, space, &bases);
  kw.body << "      for (long long j = threadIdx.x; j < len; j += blockDim.x) {\n";
  emit_segment_loads(kw, rs, space, bases, "        ");
  kw.body << "        " << combine << ";\n      }\n    }\n";
  kw.body << "    acc = thea_segment_allreduce<" << acc_t << ">(acc, " << op << ", (" << acc_t
          << "*)thea_smem);\n";
  kw.body << "    if (valid && threadIdx.x == 0) " << kw.out_ptr() << "[row] = ("
          << dtype_c_type(out) << ")(" << fin << ");\n  }\n";
}

void render_argreduce(KernelWriter& kw) {
  Step& st = kw.step_;
  const NodePtr& n = st.node;
  const auto* a = op_as<ArgReduce>(n);
  const int space = kw.plan_.index.at(n->inputs[0].get());
  const Dtype in = n->inputs[0]->type.dtype;
  ReduceShape rs =
      reduce_axes(st.index_rank, a->axis() < 0 ? std::vector<int>{} : std::vector<int>{a->axis()});
  const bool mx = a->is_max();
  std::string val_t, init;
  if (is_float(in)) {
    val_t = dtype_c_type(in);
    init = mx ? "thea_neg_inf<" + val_t + ">()" : "(-thea_neg_inf<" + val_t + ">())";
  } else {
    val_t = (in == Dtype::Bool || in == Dtype::UInt8) ? "int" : dtype_c_type(in);
    init = "(" + val_t + ")" + int_limit(in, !mx);
  }
  const std::string v = KernelWriter::var(space);
  kw.body << segment_head(kw, space, rs);
  kw.body << "    " << val_t << " best = " << init
          << ";\n    long long bi = 9223372036854775807LL;\n    if (valid) {\n";
  std::map<int, std::string> bases;
  emit_segment_prologue(kw, rs, space, &bases);
  kw.body << "      for (long long j = threadIdx.x; j < len; j += blockDim.x) {\n";
  emit_segment_loads(kw, rs, space, bases, "        ");
  kw.body << "        const " << val_t << " x = (" << val_t << ")" << v << ";\n"
          << "        if (thea_arg_better<" << val_t << ">(x, j, best, bi, "
          << (mx ? "true" : "false") << ")) { best = x; bi = j; }\n      }\n    }\n";
  kw.body << "    thea_segment_argreduce<" << val_t << ">(best, bi, " << (mx ? "true" : "false")
          << ", thea_smem);\n";
  kw.body << "    if (valid && threadIdx.x == 0) " << kw.out_ptr() << "[row] = (int64_t)bi;\n  }\n";
}

void render_softmax(KernelWriter& kw) {
  Step& st = kw.step_;
  const NodePtr& n = st.node;
  const bool log = op_as<Softmax>(n)->log();
  const int space = kw.plan_.index.at(n->inputs[0].get());
  const int rank = st.index_rank;
  ReduceShape rs;
  for (int d = 0; d < rank - 1; ++d) rs.kept.push_back(d);
  rs.reduced.push_back(rank - 1);
  const std::string v = KernelWriter::var(space);
  const std::string T = dtype_c_type(n->type.dtype);
  kw.body << segment_head(kw, space, rs);
  std::map<int, std::string> bases;
  // Pass 1: max; pass 2: sum of exp; pass 3: write. The input is recomputed per pass
  // (cheaper than storing it: rows are short and the fused expression is cheap).
  kw.body << "    double m = thea_neg_inf<double>();\n    if (valid) {\n";
  emit_segment_prologue(kw, rs, space, &bases);
  kw.body << "      for (long long j = threadIdx.x; j < len; j += blockDim.x) {\n";
  emit_segment_loads(kw, rs, space, bases, "        ");
  kw.body << "        m = thea_maximum((double)" << v << ", m);\n      }\n    }\n";
  kw.body
      << "    m = thea_segment_allreduce<double>(m, thea_op_max<double>(), (double*)thea_smem);\n";
  kw.body << "    double s = 0.0;\n    if (valid) {\n";
  bases.clear();
  emit_segment_prologue(kw, rs, space, &bases);
  kw.body << "      for (long long j = threadIdx.x; j < len; j += blockDim.x) {\n";
  emit_segment_loads(kw, rs, space, bases, "        ");
  kw.body << "        s += thea_exp((double)" << v << " - m);\n      }\n    }\n";
  kw.body
      << "    s = thea_segment_allreduce<double>(s, thea_op_add<double>(), (double*)thea_smem);\n";
  kw.body << "    if (valid) {\n      const double ls = thea_log(s);\n";
  bases.clear();
  emit_segment_prologue(kw, rs, space, &bases);
  const std::string out = kw.out_ptr();
  kw.body << "      for (long long j = threadIdx.x; j < len; j += blockDim.x) {\n";
  emit_segment_loads(kw, rs, space, bases, "        ");
  if (log)
    kw.body << "        " << out << "[row * len + j] = (" << T << ")((double)" << v
            << " - m - ls);\n";
  else
    kw.body << "        " << out << "[row * len + j] = (" << T << ")(thea_exp((double)" << v
            << " - m) / s);\n";
  kw.body << "      }\n    }\n  }\n";
}

std::string load2(KernelWriter& kw, int v, const std::string& i, const std::string& j) {
  return kw.ptr(v) + "[" + i + " * " + kw.word_stride(v, 0) + " + " + j + " * " +
         kw.word_stride(v, 1) + "]";
}
std::string load1(KernelWriter& kw, int v, const std::string& i) {
  return kw.ptr(v) + "[" + i + " * " + kw.word_stride(v, 0) + "]";
}

void render_xent(KernelWriter& kw) {
  Step& st = kw.step_;
  const int p = st.operands[0].value, l = st.operands[1].value;
  const std::string T = dtype_c_type(st.node->type.dtype);
  const std::string rows = kw.word_dim(p, 0), classes = kw.word_dim(p, 1);
  kw.body << "  int* err = (int*)" << kw.word({W::ErrWord, -1, 0, 0, 0, {}}) << ";\n";
  kw.body << "  const long long classes = " << classes << ";\n";
  kw.body << grid_loop(rows);
  kw.body << "    const long long y = (long long)" << load1(kw, l, "i") << ";\n"
          << "    if (y < 0 || y >= classes) { atomicOr(err, THEA_ERR_INDEX); " << kw.out_ptr()
          << "[i] = (" << T << ")0; continue; }\n"
          << "    " << kw.out_ptr() << "[i] = (" << T << ")(-thea_log((double)"
          << load2(kw, p, "i", "y") << "));\n  }\n";
}

void render_xent_grad(KernelWriter& kw) {
  Step& st = kw.step_;
  const int g = st.operands[0].value, p = st.operands[1].value, l = st.operands[2].value;
  const std::string T = dtype_c_type(st.node->type.dtype);
  kw.body << "  int* err = (int*)" << kw.word({W::ErrWord, -1, 0, 0, 0, {}}) << ";\n";
  kw.body << "  const long long classes = " << kw.word_dim(p, 1) << ";\n";
  kw.body << grid_loop(kw.word_numel(p));
  kw.body << "    const long long r = i / classes, c = i % classes;\n"
          << "    const long long y = (long long)" << load1(kw, l, "r") << ";\n"
          << "    if (y < 0 || y >= classes) { if (c == 0) atomicOr(err, THEA_ERR_INDEX); "
          << kw.out_ptr() << "[i] = (" << T << ")0; continue; }\n"
          << "    " << kw.out_ptr() << "[i] = c == y ? (" << T << ")(-(double)" << load1(kw, g, "r")
          << " / (double)" << load2(kw, p, "r", "c") << ") : (" << T << ")0;\n  }\n";
}

void render_one_hot(KernelWriter& kw) {
  Step& st = kw.step_;
  const auto* oh = op_as<OneHot>(st.node);
  const int l = st.operands[0].value;
  const std::string T = dtype_c_type(st.node->type.dtype);
  kw.body << "  int* err = (int*)" << kw.word({W::ErrWord, -1, 0, 0, 0, {}}) << ";\n";
  kw.body << "  const long long classes = " << kw.word_const(oh->num_classes()) << ";\n";
  kw.body << grid_loop(kw.word_numel(st.out));
  kw.body << "    const long long r = i / classes, c = i % classes;\n"
          << "    const long long y = (long long)" << load1(kw, l, "r") << ";\n"
          << "    if ((y < 0 || y >= classes) && c == 0) atomicOr(err, THEA_ERR_INDEX);\n"
          << "    " << kw.out_ptr() << "[i] = (" << T << ")(c == y ? 1 : 0);\n  }\n";
}

// Shared by take and inc_rows: a grid over (position k of the indices, element j of a row),
// with one thread per position when rows are empty so bad indices are still reported. Sets
// `r` to indices[k] wrapped like numpy (-1: the last row); out of range reports and skips.
void emit_row_index_loop(KernelWriter& kw, int x, int indices, int rank) {
  std::vector<int> inner;
  for (int d = 1; d < rank; ++d) inner.push_back(d);
  kw.body << "  int* err = (int*)" << kw.word({W::ErrWord, -1, 0, 0, 0, {}}) << ";\n"
          << "  const long long rows = " << kw.word_dim(x, 0) << ", n = " << kw.word_dim(indices, 0)
          << ", row_len = " << kw.word_prod(x, inner) << ";\n"
          << "  const long long row_len1 = row_len > 0 ? row_len : 1;\n";
  kw.body << grid_loop("n * row_len1");
  kw.body
      << "    const long long k = i / row_len1, j = i % row_len1;\n"
      << "    const long long ik = (long long)" << load1(kw, indices, "k") << ";\n"
      << "    const long long r = ik < 0 ? ik + rows : ik;\n"
      << "    if (r < 0 || r >= rows) { if (j == 0) atomicOr(err, THEA_ERR_INDEX); continue; }\n"
      << "    if (j >= row_len) continue;\n";
}

// The offset of element (first, coords[1], coords[2], ...) of value v through its strides
// (broadcast: its strides in the rank-`rank` index space it broadcasts to); without `first`,
// the offset within axis 0's element.
std::string strided_offset(KernelWriter& kw, int v, const std::string& first,
                           const std::vector<std::string>& coords, int rank, bool broadcast) {
  auto stride = [&](int d) {
    return broadcast ? kw.word_space_stride(v, d, rank) : kw.word_stride(v, d);
  };
  std::string off = first.empty() ? "0" : first + " * " + stride(0);
  for (int d = 1; d < rank; ++d)
    off += " + " + coords[static_cast<std::size_t>(d)] + " * " + stride(d);
  return off;
}

// out[k, ...] = x[indices[k], ...] (Take::perform), x of any layout, any integer indices.
void render_take(KernelWriter& kw) {
  Step& st = kw.step_;
  const int x = st.operands[0].value, ix = st.operands[1].value;
  const int rank = st.index_rank;
  emit_row_index_loop(kw, x, ix, rank);
  std::vector<std::string> c = emit_coords(kw, "    ", "i", st.out, rank, "c");
  kw.body << "    " << kw.out_ptr() << "[i] = " << kw.ptr(x) << "["
          << strided_offset(kw, x, "r", c, rank, false) << "];\n  }\n";
}

// out = x (copied before the launch), then out[indices[k], ...] += y[k, ...] in k order as
// IncRows::perform does: the thread of the first occurrence of a row sums every later one,
// so duplicate indices neither race nor change the rounding. O(n) per thread.
void render_inc_rows(KernelWriter& kw) {
  Step& st = kw.step_;
  const int x = st.operands[0].value, ix = st.operands[1].value, y = st.operands[2].value;
  const int rank = st.index_rank;
  const std::string T = dtype_c_type(st.node->type.dtype);
  emit_row_index_loop(kw, x, ix, rank);
  kw.body << "    bool first = true;\n"
          << "    for (long long q = 0; q < k && first; ++q) {\n"
          << "      const long long iq = (long long)" << load1(kw, ix, "q") << ";\n"
          << "      first = (iq < 0 ? iq + rows : iq) != r;\n"
          << "    }\n"
          << "    if (!first) continue;\n";
  std::vector<std::string> c = emit_coords(kw, "    ", "i", st.out, rank, "c");
  const std::string out = kw.out_ptr();
  kw.body << "    const long long y_inner = " << strided_offset(kw, y, "", c, rank, true)
          << ", y_row = " << kw.word_space_stride(y, 0, rank) << ";\n"
          << "    " << T << " acc = " << out << "[r * row_len + j];\n"
          << "    for (long long q = k; q < n; ++q) {\n"
          << "      const long long iq = (long long)" << load1(kw, ix, "q") << ";\n"
          << "      if ((iq < 0 ? iq + rows : iq) == r)\n"
          << "        acc = (" << T << ")(acc + (" << T << ")" << kw.ptr(y)
          << "[q * y_row + y_inner]);\n"
          << "    }\n"
          << "    " << out << "[r * row_len + j] = acc;\n  }\n";
}

// Element (row, j) of a row-major view of rank 1 (one row) or 2, through stride words.
std::string at_rc(KernelWriter& kw, int v, int rank, const std::string& row, const std::string& j) {
  if (rank == 1) return kw.ptr(v) + "[" + j + " * " + kw.word_stride(v, 0) + "]";
  return kw.ptr(v) + "[" + row + " * " + kw.word_stride(v, 0) + " + " + j + " * " +
         kw.word_stride(v, 1) + "]";
}

std::string row_head(KernelWriter& kw, int space, int rank) {
  std::string rows = rank == 2 ? kw.word_dim(space, 0) : kw.word_const(1);
  std::string len = kw.word_dim(space, rank - 1);
  std::ostringstream os;
  os << "  THEA_DYN_SMEM(thea_smem);\n"
     << "  const long long rows = " << rows << ", len = " << len << ";\n"
     << "  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows;"
     << " base += (long long)gridDim.x * blockDim.y) {\n"
     << "    const long long row = base + threadIdx.y;\n"
     << "    const bool valid = row < rows;\n";
  return os.str();
}

// sm * (g - sum(g * sm)) per row, in double as SoftmaxGrad::perform.
void render_softmax_grad(KernelWriter& kw) {
  Step& st = kw.step_;
  const int g = st.operands[0].value, sm = st.operands[1].value;
  const int rank = st.index_rank;
  const std::string T = dtype_c_type(st.node->type.dtype);
  kw.body << row_head(kw, sm, rank);
  kw.body << "    double dot = 0.0;\n    if (valid)\n"
          << "      for (long long j = threadIdx.x; j < len; j += blockDim.x)\n"
          << "        dot += (double)" << at_rc(kw, g, rank, "row", "j") << " * (double)"
          << at_rc(kw, sm, rank, "row", "j") << ";\n";
  kw.body << "    dot = thea_segment_allreduce<double>(dot, thea_op_add<double>(), "
             "(double*)thea_smem);\n";
  const std::string out = kw.out_ptr();
  kw.body << "    if (valid)\n"
          << "      for (long long j = threadIdx.x; j < len; j += blockDim.x)\n"
          << "        " << out << "[row * len + j] = (" << T << ")((double)"
          << at_rc(kw, sm, rank, "row", "j") << " * ((double)" << at_rc(kw, g, rank, "row", "j")
          << " - dot));\n  }\n";
}

// categorical cross-entropy of softmax(z) from the logits, as CrossentropySoftmax::perform:
// logsumexp in double, then lse - z[label] or sum_j y_j (lse - z_j).
void render_xent_softmax(KernelWriter& kw) {
  Step& st = kw.step_;
  const int z = st.operands[0].value, y = st.operands[1].value;
  const int rank = st.index_rank;
  const bool labels = is_integer(kw.dtype_of(y));
  const std::string T = dtype_c_type(st.node->type.dtype);
  if (labels) kw.body << "  int* err = (int*)" << kw.word({W::ErrWord, -1, 0, 0, 0, {}}) << ";\n";
  kw.body << row_head(kw, z, rank);
  kw.body
      << "    double m = thea_neg_inf<double>();\n    if (valid)\n"
      << "      for (long long j = threadIdx.x; j < len; j += blockDim.x)\n"
      << "        m = thea_maximum((double)" << at_rc(kw, z, rank, "row", "j") << ", m);\n"
      << "    m = thea_segment_allreduce<double>(m, thea_op_max<double>(), (double*)thea_smem);\n"
      << "    double s = 0.0;\n    if (valid)\n"
      << "      for (long long j = threadIdx.x; j < len; j += blockDim.x)\n"
      << "        s += thea_exp((double)" << at_rc(kw, z, rank, "row", "j") << " - m);\n"
      << "    s = thea_segment_allreduce<double>(s, thea_op_add<double>(), (double*)thea_smem);\n"
      << "    const bool m_inf = m == thea_neg_inf<double>() || m == -thea_neg_inf<double>();\n"
      << "    const double lse = m_inf ? m : m + thea_log(s);\n";
  const std::string out = kw.out_ptr();
  if (labels) {
    kw.body << "    if (valid && threadIdx.x == 0) {\n"
            << "      const long long lab = (long long)" << kw.ptr(y) << "[row * "
            << kw.word_stride(y, 0) << "];\n"
            << "      if (lab < 0 || lab >= len) { atomicOr(err, THEA_ERR_INDEX); " << out
            << "[row] = (" << T << ")0; }\n"
            << "      else " << out << "[row] = (" << T << ")(lse - (double)"
            << at_rc(kw, z, rank, "row", "lab") << ");\n    }\n  }\n";
  } else {
    kw.body << "    double acc = 0.0;\n    if (valid)\n"
            << "      for (long long j = threadIdx.x; j < len; j += blockDim.x)\n"
            << "        acc += (double)" << at_rc(kw, y, rank, "row", "j") << " * (lse - (double)"
            << at_rc(kw, z, rank, "row", "j") << ");\n"
            << "    acc = thea_segment_allreduce<double>(acc, thea_op_add<double>(), "
               "(double*)thea_smem);\n"
            << "    if (valid && threadIdx.x == 0) " << out << "[row] = (" << T << ")acc;\n  }\n";
  }
}

// g[:, None] * (sm - onehot(labels)), as CrossentropySoftmax1HotDx::perform.
void render_xent_softmax_dx(KernelWriter& kw) {
  Step& st = kw.step_;
  const int g = st.operands[0].value, sm = st.operands[1].value, l = st.operands[2].value;
  const std::string T = dtype_c_type(st.node->type.dtype);
  kw.body << "  int* err = (int*)" << kw.word({W::ErrWord, -1, 0, 0, 0, {}}) << ";\n";
  kw.body << "  const long long classes = " << kw.word_dim(sm, 1) << ";\n";
  kw.body << grid_loop(kw.word_numel(sm));
  kw.body << "    const long long r = i / classes, c = i % classes;\n"
          << "    const long long y = (long long)" << load1(kw, l, "r") << ";\n"
          << "    if (y < 0 || y >= classes) { if (c == 0) atomicOr(err, THEA_ERR_INDEX); "
          << kw.out_ptr() << "[i] = (" << T << ")0; continue; }\n"
          << "    " << kw.out_ptr() << "[i] = (" << T << ")((double)" << load1(kw, g, "r")
          << " * ((double)" << load2(kw, sm, "r", "c") << " - (c == y ? 1.0 : 0.0)));\n  }\n";
}

}  // namespace

// The fused product P = A . B (rows x NC): shared memory holds the block's rows of P
// (thea_tile), the warps' partial sums (thea_gpart), then the all-reduce scratch the sweeps
// use (thea_smem), each region 16-byte aligned and sized from blockDim (see
// row_group_gemm_config).
void emit_row_product_setup(KernelWriter& kw) {
  const Step& st = kw.step_;
  const NodePtr& d = kw.val(st.prologue).node;
  const std::string Tp = dtype_c_type(d->type.dtype);
  const int a = st.gemm_a, b = st.gemm_b;
  kw.body << "  constexpr int NC = " << d->type.shape[1] << ";\n"
          << "  const long long K = " << kw.word_dim(a, 1) << ";\n"
          << "  const long long as_i = " << kw.word_stride(a, 0)
          << ", as_q = " << kw.word_stride(a, 1) << ";\n"
          << "  const long long bs_q = " << kw.word_stride(b, 0)
          << ", bs_j = " << kw.word_stride(b, 1) << ";\n"
          << "  const " << Tp << "* A = " << kw.ptr(a) << ";\n"
          << "  const " << Tp << "* B = " << kw.ptr(b) << ";\n"
          << "  THEA_DYN_SMEM(thea_smem_base);\n"
          << "  const unsigned thea_nw = blockDim.x / 32u;\n"
          << "  const unsigned long long thea_tile_bytes = (blockDim.y * NC * sizeof(" << Tp
          << ") + 15) / 16 * 16;\n"
          << "  const unsigned long long thea_gpart_bytes = (blockDim.y * thea_nw * NC * sizeof("
          << Tp << ") + 15) / 16 * 16;\n"
          << "  " << Tp << "* thea_tile = reinterpret_cast<" << Tp << "*>(thea_smem_base);\n"
          << "  " << Tp << "* thea_gpart = reinterpret_cast<" << Tp
          << "*>(thea_smem_base + thea_tile_bytes);\n"
          << "  unsigned char* thea_smem = thea_smem_base + thea_tile_bytes + thea_gpart_bytes;\n";
}

// Row `row` of P into thea_tile[threadIdx.y][0..NC): the segment's threads stride the
// reduction, then shuffles in each warp and the warps' partials in order (deterministic).
void emit_row_product(KernelWriter& kw, const std::string& row) {
  const std::string Tp = dtype_c_type(kw.val(kw.step_.prologue).node->type.dtype);
  kw.body << "    {\n"
          << row_dot_code("      ", Tp, row, "threadIdx.x", "K", "blockDim.x", "valid")
          << warp_sum_code("      ")
          << "      __syncthreads();  // the previous rows' tile is read\n"
          << "      if (threadIdx.x % 32u == 0)\n"
          << "        THEA_UNROLL for (int j = 0; j < NC; ++j)\n"
          << "          thea_gpart[(threadIdx.y * thea_nw + threadIdx.x / 32u) * NC + j] = "
             "acc[j];\n"
          << "      __syncthreads();\n"
          << "      if (threadIdx.x < (unsigned)NC) {\n"
          << "        const " << Tp << "* gp = thea_gpart + threadIdx.y * thea_nw * NC;\n"
          << "        " << Tp << " s = gp[threadIdx.x];\n"
          << "        for (unsigned w = 1; w < thea_nw; ++w) s += gp[w * NC + threadIdx.x];\n"
          << "        thea_tile[threadIdx.y * NC + threadIdx.x] = s;\n"
          << "      }\n"
          << "      __syncthreads();\n"
          << "    }\n";
}
namespace {

// ---- row groups ------------------------------------------------------------------------
// A fused row-wise subgraph (see Lowering::find_row_groups). Per row of the (N, C) space,
// a segment of threads makes `passes` sweeps over the columns; values are either element
// values (computed inside a sweep, named e<v>) or per-row values (registers shared by the
// segment, r<v>). Reductions accumulate in one sweep and are all-reduced after it.
class RowGroupWriter {
 public:
  explicit RowGroupWriter(KernelWriter& kw) : kw_(kw), st_(kw.step_) {}

  void render() {
    for (const NodePtr& n : st_.fused) members_.insert(vi(n));
    for (const NodePtr& n : st_.fused) plan_node(n);
    space_ = st_.space;
    int passes = 0;
    for (auto& [v, p] : accum_pass_) passes = std::max(passes, p + 1);
    for (int v : stores_)
      if (is_elem(v)) passes = std::max(passes, ready_[v] + 1);
    if (needs_err_)
      kw_.body << "  int* err = (int*)" << kw_.word({ParamWord::Kind::ErrWord, -1, 0, 0, 0, {}})
               << ";\n";
    if (st_.prologue >= 0) {
      emit_row_product_setup(kw_);
    } else {
      kw_.body << "  THEA_DYN_SMEM(thea_smem);\n";
    }
    kw_.body << "  const long long rows = " << kw_.word_dim(space_, 0)
             << ", len = " << kw_.word_dim(space_, 1) << ";\n";
    if (st_.total >= 0) {
      // One slot per row of the block, after the all-reduce scratch (see add_row_total).
      kw_.body
          << "  double thea_racc = 0.0;  // this block's rows, added in order\n"
          << "  double* thea_rpart = reinterpret_cast<double*>(thea_smem + (blockDim.x > 32u ? "
             "16u * blockDim.y * (blockDim.x / 32u) : 0u));\n";
    }
    kw_.body << "  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows;"
             << " base += (long long)gridDim.x * blockDim.y) {\n"
             << "    const long long row = base + threadIdx.y;\n"
             << "    const bool valid = row < rows;\n"
             << "    const long long rowc = valid ? row : 0;  // safe index for idle threads\n";
    if (st_.prologue >= 0) emit_row_product(kw_, "rowc");
    // Per-row external operands and scalars.
    for (const Operand& o : st_.operands) {
      if (row_uses_.count(o.value)) emit_row_load(o.value);
    }
    emit_boundary(0);
    for (int p = 0; p < passes; ++p) {
      emit_pass(p);
      emit_boundary(p + 1);
    }
    // Per-row results.
    for (int v : stores_) {
      if (is_elem(v)) continue;
      kw_.body << "    if (valid && threadIdx.x == 0) " << out_ptr(v) << "[row] = r" << v << ";\n";
    }
    if (st_.total >= 0) emit_total_row();
    kw_.body << "  }\n";
    if (st_.total >= 0) emit_total_end();
  }

 private:
  int vi(const NodePtr& n) const { return kw_.plan_.index.at(n.get()); }
  const Value& val(int v) const { return kw_.val(v); }

  // The fused total (sum or mean of member `src` over all rows): per loop iteration, the
  // block's rows into their slots, then added in row order by thread (0, 0).
  void emit_total_row() {
    const int src = vi(val(st_.total).node->inputs[0]);
    kw_.body << "    __syncthreads();  // the previous rows' slots are read\n"
             << "    if (threadIdx.x == 0) thea_rpart[threadIdx.y] = valid ? (double)r" << src
             << " : 0.0;\n"
             << "    __syncthreads();\n"
             << "    if (threadIdx.x == 0 && threadIdx.y == 0)\n"
             << "      for (unsigned k = 0; k < blockDim.y; ++k) thea_racc += thea_rpart[k];\n";
  }

  // Each block stores its partial; the last block to finish (a counter, reset for the next
  // launch) adds the partials in block order and writes the total.
  void emit_total_end() {
    const int u = st_.total;
    const bool mean = op_as<Reduce>(val(u).node)->kind() == ReduceKind::Mean;
    st_.total_words = static_cast<int>(st_.params.size());
    const std::string parts = kw_.word_const(0), count = kw_.word_const(0);
    const std::string Tu = T(dt(u));
    kw_.body
        << "  if (threadIdx.x == 0 && threadIdx.y == 0) {\n"
        << "    double* parts = (double*)" << parts << ";\n"
        << "    unsigned* count = (unsigned*)" << count << ";\n"
        << "    parts[blockIdx.x] = thea_racc;\n"
        << "    __threadfence();\n"
        << "    if (atomicAdd(count, 1u) == gridDim.x - 1u) {\n"
        << "      __threadfence();\n"
        << "      double t = 0.0;\n"
        << "      for (unsigned b = 0; b < gridDim.x; ++b) t += ((volatile double*)parts)[b];\n"
        << "      " << out_ptr(u) << "[0] = (" << Tu << ")(" << (mean ? "t / (double)rows" : "t")
        << ");\n"
        << "      *count = 0u;  // ready for the next launch (graph replays)\n"
        << "    }\n"
        << "  }\n";
  }

  bool member(int v) const { return members_.count(v) > 0; }
  bool is_elem(int v) const {
    const TensorType& t = val(v).node->type;
    return t.ndim() == 2 && t.shape[0] != 1 && t.shape[1] != 1;
  }
  static std::string T(Dtype d) { return dtype_c_type(d); }
  Dtype dt(int v) const { return val(v).node->type.dtype; }

  std::string out_ptr(int v) {
    return "((" + std::string(T(dt(v))) + "*)" + kw_.word({ParamWord::Kind::Ptr, v, 0, 0, 0, {}}) +
           ")";
  }

  // How a member reads each input: element-wise (e), per row (r), per column (c), scalar.
  enum class Role { Elem, Row, Col, Scalar };
  Role role_of(const NodePtr& consumer, std::size_t k) const {
    const NodePtr& in = consumer->inputs[k];
    const TensorType& t = in->type;
    bool scalar = true;
    for (auto d : t.shape) scalar &= d == 1;
    if (scalar) return Role::Scalar;
    if (op_as<Elemwise>(consumer) && is_elem(vi(consumer))) {
      if (t.ndim() == 1) return Role::Col;
      if (t.shape[0] == 1) return Role::Col;
      if (t.shape[1] == 1) return Role::Row;
      return Role::Elem;
    }
    if (op_as<Elemwise>(consumer) || op_as<DimShuffle>(consumer)) return Role::Row;
    if (op_as<CrossentropySoftmax>(consumer))
      return k == 0 || !is_integer(t.dtype) ? Role::Elem : Role::Row;
    if (op_as<CrossentropySoftmax1HotDx>(consumer)) return k == 1 ? Role::Elem : Role::Row;
    return Role::Elem;  // reduce, argmax, softmax, softmax_grad
  }

  // Second(x, v) reads only x's shape: its value is never waited for nor loaded.
  static bool shape_only_input(const NodePtr& consumer, std::size_t k) {
    const auto* e = op_as<Elemwise>(consumer);
    return e && e->scalar_op() == ScalarOp::Second && k == 0;
  }

  // The value of input k of `consumer` where the consumer is computed (loop or row level).
  std::string in_expr(const NodePtr& consumer, std::size_t k) {
    if (shape_only_input(consumer, k))
      return "((" + std::string(T(consumer->inputs[k]->type.dtype)) + ")0)";
    int v = vi(consumer->inputs[k]);
    Role r = role_of(consumer, k);
    if (r == Role::Elem || r == Role::Col) return "e" + std::to_string(v);
    return "r" + std::to_string(v);
  }

  void plan_node(const NodePtr& n) {
    const int v = vi(n);
    int ready = 0;
    for (std::size_t k = 0; k < n->inputs.size(); ++k) {
      if (shape_only_input(n, k)) continue;
      int j = vi(n->inputs[k]);
      Role r = role_of(n, k);
      if (member(j)) {
        ready = std::max(ready, ready_[j]);
      } else if (r == Role::Row || r == Role::Scalar) {
        row_uses_.insert(j);
      }
    }
    if (op_as<Reduce>(n) || op_as<ArgReduce>(n)) {
      accum_pass_[v] = ready;
      ready += 1;
    } else if (op_as<Softmax>(n)) {
      accum_pass_[v] = ready + 1;  // max in `ready`, sum of exp in `ready + 1`
      first_pass_[v] = ready;
      ready += 2;
    } else if (op_as<SoftmaxGrad>(n)) {
      accum_pass_[v] = ready;
      ready += 1;
    } else if (const auto* x = op_as<CrossentropySoftmax>(n)) {
      (void)x;
      first_pass_[v] = ready;
      if (is_integer(n->inputs[1]->type.dtype)) {
        accum_pass_[v] = ready + 1;
        ready += 2;
        needs_err_ = true;
      } else {
        accum_pass_[v] = ready + 2;
        ready += 3;
      }
    } else if (op_as<CrossentropySoftmax1HotDx>(n)) {
      needs_err_ = true;
    }
    ready_[v] = ready;
    if (val(v).place == Place::Buffer) stores_.push_back(v);
  }

  // Loads a per-row operand (or scalar) once per row.
  void emit_row_load(int v) {
    const Value& ov = val(v);
    std::string rhs;
    if (ov.place == Place::Host) {
      rhs = kw_.host_scalar(v);
    } else {
      bool scalar = true;
      for (auto d : ov.node->type.shape) scalar &= d == 1;
      rhs = scalar ? kw_.ptr(v) + "[0]" : kw_.ptr(v) + "[rowc * " + kw_.word_stride(v, 0) + "]";
    }
    kw_.body << "    const " << T(dt(v)) << " r" << v << " = " << rhs << ";\n";
  }

  // Element values needed for `targets` (members, inputs first), emitted into a sweep.
  void emit_elems(const std::set<int>& targets, const std::string& ind,
                  const std::set<int>& consumers = {}) {
    std::set<int> need;
    std::function<void(int)> want = [&](int v) {
      if (!member(v) || !is_elem(v) || need.count(v)) return;
      need.insert(v);
      const NodePtr& n = val(v).node;
      for (std::size_t k = 0; k < n->inputs.size(); ++k)
        if (!shape_only_input(n, k)) want(vi(n->inputs[k]));
    };
    for (int t : targets) want(t);
    // External element and column operands read by the needed members.
    std::set<int> loaded;
    for (const NodePtr& n : st_.fused) {
      int v = vi(n);
      if (!need.count(v) && !consumers.count(v)) continue;
      for (std::size_t k = 0; k < n->inputs.size(); ++k) {
        if (shape_only_input(n, k)) continue;
        int j = vi(n->inputs[k]);
        if (member(j) || loaded.count(j)) continue;
        Role r = role_of(n, k);
        if (r != Role::Elem && r != Role::Col) continue;
        loaded.insert(j);
        if (j == st_.prologue) {  // computed by this kernel: j < len == NC
          kw_.body << ind << "const " << T(dt(j)) << " e" << j
                   << " = thea_tile[threadIdx.y * NC + j];\n";
          continue;
        }
        std::string idx;
        const TensorType& t = val(j).node->type;
        if (r == Role::Elem)
          idx = "rowc * " + kw_.word_stride(j, 0) + " + j * " + kw_.word_stride(j, 1);
        else
          idx = "j * " + kw_.word_stride(j, t.ndim() - 1);
        kw_.body << ind << "const " << T(dt(j)) << " e" << j << " = " << kw_.ptr(j) << "[" << idx
                 << "];\n";
      }
    }
    for (const NodePtr& n : st_.fused) {
      int v = vi(n);
      if (!need.count(v)) continue;
      kw_.body << ind << "const " << T(dt(v)) << " e" << v << " = " << elem_expr(n) << ";\n";
    }
  }

  std::string elem_expr(const NodePtr& n) {
    const int v = vi(n);
    const std::string Tn = T(dt(v));
    if (const auto* e = op_as<Elemwise>(n)) {
      std::vector<std::string> in;
      for (std::size_t k = 0; k < n->inputs.size(); ++k) in.push_back(in_expr(n, k));
      return elemwise_expr(*e, n, in);
    }
    if (const auto* sm = op_as<Softmax>(n)) {
      std::string x = "(double)" + in_expr(n, 0), id = std::to_string(v);
      if (sm->log()) return "(" + Tn + ")(" + x + " - m" + id + " - ls" + id + ")";
      return "(" + Tn + ")(thea_exp(" + x + " - m" + id + ") / s" + id + ")";
    }
    if (op_as<SoftmaxGrad>(n))
      return "(" + Tn + ")((double)" + in_expr(n, 1) + " * ((double)" + in_expr(n, 0) + " - d" +
             std::to_string(v) + "))";
    if (op_as<CrossentropySoftmax1HotDx>(n))
      return "(" + Tn + ")((double)" + in_expr(n, 0) + " * ((double)" + in_expr(n, 1) +
             " - (j == (long long)" + in_expr(n, 2) + " ? 1.0 : 0.0)))";
    throw Error("cuda codegen: row group cannot compute " + n->describe() + " per element");
  }

  // A sweep over the columns: accumulations of this pass and element stores.
  void emit_pass(int p) {
    std::set<int> targets, consumers;
    std::ostringstream acc_decl, acc_body, finish;
    for (const NodePtr& n : st_.fused) {
      const int v = vi(n);
      const std::string id = std::to_string(v);
      auto in0 = [&](std::size_t k) { return in_expr(n, k); };
      if (const auto* r = op_as<Reduce>(n); r && accum_pass_[v] == p) {
        targets.insert(vi(n->inputs[0]));
        consumers.insert(v);
        reduce_parts(n, *r, id, acc_decl, acc_body, finish, in0(0));
      } else if (const auto* a = op_as<ArgReduce>(n); a && accum_pass_[v] == p) {
        targets.insert(vi(n->inputs[0]));
        consumers.insert(v);
        Dtype in = n->inputs[0]->type.dtype;
        std::string vt =
            is_float(in) ? T(in) : ((in == Dtype::Bool || in == Dtype::UInt8) ? "int" : T(in));
        std::string init = is_float(in) ? (a->is_max() ? "thea_neg_inf<" + vt + ">()"
                                                       : "(-thea_neg_inf<" + vt + ">())")
                                        : "(" + vt + ")" + int_limit(in, !a->is_max());
        acc_decl << "    " << vt << " b" << id << " = " << init << ";\n    long long bi" << id
                 << " = 9223372036854775807LL;\n";
        acc_body << "        if (thea_arg_better<" << vt << ">((" << vt << ")" << in0(0) << ", j, b"
                 << id << ", bi" << id << ", " << (a->is_max() ? "true" : "false") << ")) { b" << id
                 << " = (" << vt << ")" << in0(0) << "; bi" << id << " = j; }\n";
        finish << "    thea_segment_argreduce<" << vt << ">(b" << id << ", bi" << id << ", "
               << (a->is_max() ? "true" : "false") << ", thea_smem);\n"
               << "    const int64_t r" << id << " = (int64_t)bi" << id << ";\n";
      } else if (op_as<Softmax>(n) && (first_pass_[v] == p || accum_pass_[v] == p)) {
        targets.insert(vi(n->inputs[0]));
        consumers.insert(v);
        if (first_pass_[v] == p) {
          acc_decl << "    double m" << id << " = thea_neg_inf<double>();\n";
          acc_body << "        m" << id << " = thea_maximum((double)" << in0(0) << ", m" << id
                   << ");\n";
          finish << "    m" << id << " = thea_segment_allreduce<double>(m" << id
                 << ", thea_op_max<double>(), (double*)thea_smem);\n";
        } else {
          acc_decl << "    double s" << id << " = 0.0;\n";
          acc_body << "        s" << id << " += thea_exp((double)" << in0(0) << " - m" << id
                   << ");\n";
          finish << "    s" << id << " = thea_segment_allreduce<double>(s" << id
                 << ", thea_op_add<double>(), (double*)thea_smem);\n"
                 << "    const double ls" << id << " = thea_log(s" << id << ");\n";
        }
      } else if (op_as<SoftmaxGrad>(n) && accum_pass_[v] == p) {
        targets.insert(vi(n->inputs[0]));
        consumers.insert(v);
        targets.insert(vi(n->inputs[1]));
        acc_decl << "    double d" << id << " = 0.0;\n";
        acc_body << "        d" << id << " += (double)" << in0(0) << " * (double)" << in0(1)
                 << ";\n";
        finish << "    d" << id << " = thea_segment_allreduce<double>(d" << id
               << ", thea_op_add<double>(), (double*)thea_smem);\n";
      } else if (op_as<CrossentropySoftmax>(n) &&
                 (first_pass_[v] == p || first_pass_[v] + 1 == p || accum_pass_[v] == p)) {
        const bool labels = is_integer(n->inputs[1]->type.dtype);
        targets.insert(vi(n->inputs[0]));
        consumers.insert(v);
        if (first_pass_[v] == p) {
          acc_decl << "    double m" << id << " = thea_neg_inf<double>();\n";
          acc_body << "        m" << id << " = thea_maximum((double)" << in0(0) << ", m" << id
                   << ");\n";
          finish << "    m" << id << " = thea_segment_allreduce<double>(m" << id
                 << ", thea_op_max<double>(), (double*)thea_smem);\n";
        } else if (first_pass_[v] + 1 == p) {
          acc_decl << "    double s" << id << " = 0.0;\n";
          acc_body << "        s" << id << " += thea_exp((double)" << in0(0) << " - m" << id
                   << ");\n";
          finish << "    s" << id << " = thea_segment_allreduce<double>(s" << id
                 << ", thea_op_add<double>(), (double*)thea_smem);\n"
                 << "    const bool mi" << id << " = m" << id << " == thea_neg_inf<double>() || m"
                 << id << " == -thea_neg_inf<double>();\n"
                 << "    const double lse" << id << " = mi" << id << " ? m" << id << " : m" << id
                 << " + thea_log(s" << id << ");\n";
          if (labels) gathers_[p + 1].push_back(v);
        } else if (!labels) {
          targets.insert(vi(n->inputs[1]));
          acc_decl << "    double a" << id << " = 0.0;\n";
          acc_body << "        a" << id << " += (double)" << in0(1) << " * (lse" << id
                   << " - (double)" << in0(0) << ");\n";
          finish << "    a" << id << " = thea_segment_allreduce<double>(a" << id
                 << ", thea_op_add<double>(), (double*)thea_smem);\n"
                 << "    const " << T(dt(v)) << " r" << id << " = (" << T(dt(v)) << ")a" << id
                 << ";\n";
        }
      }
    }
    // Element stores of this pass.
    std::vector<int> elem_stores;
    for (int v : stores_)
      if (is_elem(v) && ready_[v] == p) {
        elem_stores.push_back(v);
        targets.insert(v);
      }
    if (targets.empty() && acc_decl.str().empty()) return;
    kw_.body << "    // sweep " << p << "\n" << acc_decl.str();
    kw_.body
        << "    if (valid) {\n      for (long long j = threadIdx.x; j < len; j += blockDim.x) {\n";
    emit_elems(targets, "        ", consumers);
    kw_.body << acc_body.str();
    for (int v : elem_stores)
      kw_.body << "        " << out_ptr(v) << "[row * len + j] = e" << v << ";\n";
    kw_.body << "      }\n    }\n" << finish.str();
  }

  void reduce_parts(const NodePtr& n, const Reduce& r, const std::string& id,
                    std::ostringstream& decl, std::ostringstream& body, std::ostringstream& finish,
                    const std::string& x) {
    const Dtype in = n->inputs[0]->type.dtype, out = n->type.dtype;
    std::string acc_t, init, op, fin, combine;
    switch (r.kind()) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        if (is_float(in) || r.kind() == ReduceKind::Mean) {
          acc_t = "double";
          init = "0.0";
          combine = "q" + id + " = q" + id + " + (double)" + x;
          op = "thea_op_add<double>()";
          fin = r.kind() == ReduceKind::Mean ? "q" + id + " / (double)len" : "q" + id;
        } else {
          acc_t = "unsigned long long";
          init = "0ull";
          combine = "q" + id + " = q" + id + " + (unsigned long long)(long long)" + x;
          op = "thea_op_add<unsigned long long>()";
          fin = "(long long)q" + id;
        }
        break;
      case ReduceKind::Prod:
        if (is_float(in)) {
          acc_t = "double";
          init = "1.0";
          combine = "q" + id + " = q" + id + " * (double)" + x;
          op = "thea_op_mul<double>()";
          fin = "q" + id;
        } else {
          acc_t = "unsigned long long";
          init = "1ull";
          combine = "q" + id + " = q" + id + " * (unsigned long long)(long long)" + x;
          op = "thea_op_mul<unsigned long long>()";
          fin = "(long long)q" + id;
        }
        break;
      case ReduceKind::Max:
      case ReduceKind::Min: {
        const bool mx = r.kind() == ReduceKind::Max;
        if (is_float(in)) {
          acc_t = T(in);
          init = mx ? "thea_neg_inf<" + acc_t + ">()" : "(-thea_neg_inf<" + acc_t + ">())";
        } else {
          acc_t = (in == Dtype::Bool || in == Dtype::UInt8) ? "int" : T(in);
          init = "(" + acc_t + ")" + int_limit(in, !mx);
        }
        combine = "q" + id + " = " + std::string(mx ? "thea_maximum" : "thea_minimum") + "<" +
                  acc_t + ">(q" + id + ", (" + acc_t + ")" + x + ")";
        op = std::string(mx ? "thea_op_max<" : "thea_op_min<") + acc_t + ">()";
        fin = "q" + id;
        break;
      }
    }
    decl << "    " << acc_t << " q" << id << " = " << init << ";\n";
    body << "        " << combine << ";\n";
    finish << "    q" << id << " = thea_segment_allreduce<" << acc_t << ">(q" << id << ", " << op
           << ", (" << acc_t << "*)thea_smem);\n"
           << "    const " << T(out) << " r" << id << " = (" << T(out) << ")(" << fin << ");\n";
  }

  // Per-row values that become known before sweep b: gathers (cross-entropy at the label)
  // and per-row elementwise ops / dimshuffles.
  void emit_boundary(int b) {
    for (int v : gathers_[b]) {
      const NodePtr& n = val(v).node;
      const std::string id = std::to_string(v);
      const std::string Tn = T(dt(v));
      kw_.body << "    " << Tn << " r" << id << " = (" << Tn << ")0;\n"
               << "    {\n      const long long j = (long long)" << in_expr(n, 1) << ";\n"
               << "      if (j < 0 || j >= len) {\n        if (valid && threadIdx.x == 0) "
                  "atomicOr(err, THEA_ERR_INDEX);\n"
               << "      } else if (valid) {\n";
      emit_elems({vi(n->inputs[0])}, "        ", {v});
      kw_.body << "        r" << id << " = (" << Tn << ")(lse" << id << " - (double)"
               << in_expr(n, 0) << ");\n      }\n    }\n";
    }
    for (const NodePtr& n : st_.fused) {
      const int v = vi(n);
      if (is_elem(v) || ready_[v] != b) continue;
      if (!(op_as<Elemwise>(n) || op_as<DimShuffle>(n))) continue;
      const std::string Tn = T(dt(v));
      if (op_as<DimShuffle>(n)) {
        kw_.body << "    const " << Tn << " r" << v << " = " << in_expr(n, 0) << ";\n";
        continue;
      }
      std::vector<std::string> in;
      for (std::size_t k = 0; k < n->inputs.size(); ++k) in.push_back(in_expr(n, k));
      kw_.body << "    const " << Tn << " r" << v << " = "
               << elemwise_expr(*op_as<Elemwise>(n), n, in) << ";\n";
    }
    // Dx label checks, once per row, when the labels are known.
    for (const NodePtr& n : st_.fused)
      if (op_as<CrossentropySoftmax1HotDx>(n) && ready_[vi(n)] == b)
        kw_.body << "    if (valid && threadIdx.x == 0 && ((long long)" << in_expr(n, 2)
                 << " < 0 || (long long)" << in_expr(n, 2)
                 << " >= len)) atomicOr(err, THEA_ERR_INDEX);\n";
  }

  KernelWriter& kw_;
  Step& st_;
  std::set<int> members_, row_uses_;
  std::map<int, int> ready_, accum_pass_, first_pass_;
  std::map<int, std::vector<int>> gathers_;
  std::vector<int> stores_;
  int space_ = -1;
  bool needs_err_ = false;
};

void render_row_group(KernelWriter& kw) { RowGroupWriter(kw).render(); }

void render_dot_naive(KernelWriter& kw) {
  Step& st = kw.step_;
  const int a = st.operands[0].value, b = st.operands[1].value;
  const NodePtr& n = st.node;
  const Dtype dt = n->type.dtype;
  const std::string T = dtype_c_type(dt), Acc = is_float(dt) ? "double" : "long long";
  const int ra = n->inputs[0]->type.ndim(), rb = n->inputs[1]->type.ndim();
  const std::string m = ra == 2 ? kw.word_dim(a, 0) : kw.word_const(1);
  const std::string k = kw.word_dim(a, ra - 1);
  const std::string nn = rb == 2 ? kw.word_dim(b, 1) : kw.word_const(1);
  const std::string as0 = ra == 2 ? kw.word_stride(a, 0) : kw.word_const(0);
  const std::string as1 = kw.word_stride(a, ra - 1);
  const std::string bs0 = kw.word_stride(b, 0);
  const std::string bs1 = rb == 2 ? kw.word_stride(b, 1) : kw.word_const(0);
  kw.body << "  const long long m = " << m << ", n = " << nn << ", k = " << k << ";\n";
  kw.body << grid_loop("m * n");
  kw.body << "    const long long r = i / n, c = i % n;\n    " << Acc << " acc = 0;\n"
          << "    for (long long q = 0; q < k; ++q)\n"
          << "      acc += (" << Acc << ")(" << T << ")" << kw.ptr(a) << "[r * " << as0 << " + q * "
          << as1 << "] * (" << Acc << ")(" << T << ")" << kw.ptr(b) << "[q * " << bs0 << " + c * "
          << bs1 << "];\n"
          << "    " << kw.out_ptr() << "[i] = (" << T << ")acc;\n  }\n";
}

// The skinny gemm: out (M x NC) = alpha * op(A) . op(B) [+ beta * C], NC <= 32 a compile-time
// constant so the NC sums live in registers. Operands are read through their views' strides
// (a per-call slice's pointer comes from the argument block, so the launch stays capturable).
// Two layouts, chosen per instance (mode word; see skinny_gemm_config): mode 0 a block per
// row, lanes striding the reduction; mode 1 a thread per row, chunks of the reduction per
// block_y. Each output element is read (C) and written by one thread: safe in place.
void render_skinny_gemm(KernelWriter& kw) {
  Step& st = kw.step_;
  const TensorType& ot = kw.val(st.out).node->type;
  const std::string T = dtype_c_type(ot.dtype);
  const int nc = static_cast<int>(ot.shape[1]);
  const int a = st.gemm_a, b = st.gemm_b, c = st.gemm_c;
  const int a_row = st.trans_a ? 1 : 0, a_red = 1 - a_row;  // A's axes: op(A)'s rows, reduction
  const int b_red = st.trans_b ? 1 : 0, b_col = 1 - b_red;
  const std::string mode = kw.word_const(0);
  st.skinny_mode_word = static_cast<int>(st.params.size()) - 1;
  auto scalar = [&](int value, int slot) {
    if (value >= 0) return "((" + T + ")" + kw.ptr(value) + "[0])";
    return std::string(ot.dtype == Dtype::Float32 ? "thea_arg_f32" : "thea_arg_f64") + "(args, " +
           std::to_string(slot) + ")";
  };
  std::ostringstream& o = kw.body;
  o << "  constexpr int NC = " << nc << ";\n"
    << "  const long long M = " << kw.word_dim(st.out, 0) << ", K = " << kw.word_dim(a, a_red)
    << ";\n"
    << "  const long long as_i = " << kw.word_stride(a, a_row)
    << ", as_q = " << kw.word_stride(a, a_red) << ";\n"
    << "  const long long bs_q = " << kw.word_stride(b, b_red)
    << ", bs_j = " << kw.word_stride(b, b_col) << ";\n"
    << "  const " << T << "* A = " << kw.ptr(a) << ";\n"
    << "  const " << T << "* B = " << kw.ptr(b) << ";\n"
    << "  " << T << "* O = " << kw.out_ptr() << ";\n"
    << "  const " << T << " alpha = " << scalar(st.alpha_value, st.alpha_slot) << ";\n";
  if (c >= 0) {
    // C broadcasts like an elementwise operand would (size-1 axes read with stride 0).
    o << "  const " << T << "* C = " << kw.ptr(c) << ";\n"
      << "  const long long cs_i = " << kw.word_space_stride(c, 0, 2)
      << ", cs_j = " << kw.word_space_stride(c, 1, 2) << ";\n"
      << "  const " << T << " beta = " << scalar(st.beta_value, st.beta_slot) << ";\n";
  }
  // BLAS semantics: beta == 0 does not read C.
  auto store = [&](const std::string& ind, const std::string& col, const std::string& sum) {
    o << ind << T << " v = alpha * " << sum << ";\n";
    if (c >= 0)
      o << ind << "if (beta != (" << T << ")0) v += beta * C[i * cs_i + " << col << " * cs_j];\n";
    o << ind << "O[i * NC + " << col << "] = v;\n";
  };
  o << "  THEA_DYN_SMEM(thea_smem);\n"
    << "  " << T << "* part = reinterpret_cast<" << T << "*>(thea_smem);\n"
    << "  const long long ky = blockDim.y, ty = threadIdx.y, tx = threadIdx.x;\n"
    << "  if (" << mode << " == 0) {\n"
    << "    for (long long i = blockIdx.x; i < M; i += gridDim.x) {\n"
    << row_dot_code("      ", T, "i", "ty * 32 + tx", "K", "32 * ky", "") << warp_sum_code("      ")
    << "      if (ky > 1) {\n"
    << "        __syncthreads();  // the previous row's partials are read\n"
    << "        if (tx == 0)\n"
    << "          THEA_UNROLL for (int j = 0; j < NC; ++j) part[ty * NC + j] = acc[j];\n"
    << "        __syncthreads();\n"
    << "      }\n"
    << "      if (ty == 0 && ky > 1 && tx < NC) {\n"
    << "        " << T << " s = part[tx];\n"
    << "        for (long long k = 1; k < ky; ++k) s += part[k * NC + tx];\n";
  store("        ", "tx", "s");
  // Lane j stores column j; acc is only ever indexed by the unrolled j (a select on the lane
  // index would become a dynamic index and move acc to local memory).
  o << "      } else if (ty == 0 && ky == 1) {\n"
    << "        THEA_UNROLL for (int j = 0; j < NC; ++j)\n"
    << "          if (tx == j) {\n"
    << "            const " << T << " s = acc[j];\n";
  store("            ", "j", "s");
  o << "          }\n"
    << "      }\n"
    << "    }\n"
    << "  } else {\n"
    << "    const long long bx = blockDim.x;\n"
    << "    const long long chunk = (K + ky - 1) / ky, q0 = ty * chunk;\n"
    << "    const long long q1 = q0 + chunk < K ? q0 + chunk : K;\n"
    << "    for (long long i0 = (long long)blockIdx.x * bx; i0 < M; i0 += (long long)gridDim.x * "
       "bx) "
       "{\n"
    << "      const long long i = i0 + tx;\n"
    << row_dot_code("      ", T, "i", "q0", "q1", "1", "i < M") << "      if (ky > 1) {\n"
    << "        __syncthreads();  // the previous rows' partials are read\n"
    << "        THEA_UNROLL for (int j = 0; j < NC; ++j) part[(j * ky + ty) * bx + tx] = acc[j];\n"
    << "        __syncthreads();\n"
    << "        if (ty == 0)\n"
    << "          THEA_UNROLL for (int j = 0; j < NC; ++j) {\n"
    << "            " << T << " s = part[j * ky * bx + tx];\n"
    << "            for (long long k = 1; k < ky; ++k) s += part[(j * ky + k) * bx + tx];\n"
    << "            acc[j] = s;\n"
    << "          }\n"
    << "      }\n"
    << "      if (ty == 0 && i < M)\n"
    << "        THEA_UNROLL for (int j = 0; j < NC; ++j) {\n"
    << "          const " << T << " s = acc[j];\n";
  store("          ", "j", "s");
  o << "        }\n"
    << "    }\n"
    << "  }\n";
}

}  // namespace

void render_kernels(Plan& plan) {
  std::ostringstream src;
  std::map<std::string, std::string> by_body;  // body -> kernel name
  for (Step& st : plan.steps) {
    st.params.clear();
    KernelWriter kw(plan, st);
    switch (st.kind) {
      case StepKind::Map:
        render_map(kw);
        break;
      case StepKind::Copy:
        render_copy(kw);
        break;
      case StepKind::Reduce:
        render_reduce(kw);
        break;
      case StepKind::ArgReduce:
        render_argreduce(kw);
        break;
      case StepKind::Softmax:
        render_softmax(kw);
        break;
      case StepKind::Xent:
        render_xent(kw);
        break;
      case StepKind::XentGrad:
        render_xent_grad(kw);
        break;
      case StepKind::OneHot:
        render_one_hot(kw);
        break;
      case StepKind::SoftmaxGrad:
        render_softmax_grad(kw);
        break;
      case StepKind::XentSoftmax:
        render_xent_softmax(kw);
        break;
      case StepKind::XentSoftmaxDx:
        render_xent_softmax_dx(kw);
        break;
      case StepKind::RowGroup:
        render_row_group(kw);
        break;
      case StepKind::DotNaive:
        render_dot_naive(kw);
        break;
      case StepKind::Take:
        render_take(kw);
        break;
      case StepKind::IncRows:
        render_inc_rows(kw);
        break;
      case StepKind::Loop:
        render_loop_kernel(kw);
        break;
      case StepKind::Gemm:
        if (!st.skinny) continue;
        render_skinny_gemm(kw);
        break;
      default:
        continue;
    }
    const std::size_t nw = std::max<std::size_t>(st.params.size(), 1);
    std::string body = "(const thea_params<" + std::to_string(nw) +
                       "> p, const long long* __restrict__ args) {\n" + kw.body.str() + "}\n";
    auto it = by_body.find(body);
    if (it != by_body.end()) {
      st.kernel = it->second;
      continue;
    }
    std::string name = std::string("thea_") + step_kind_name(st.kind) + "_" +
                       disk_cache::digest128(body).substr(0, 12);
    by_body[body] = name;
    st.kernel = name;
    src << "// " << step_kind_name(st.kind) << " "
        << (st.node->kind == NodeKind::Apply ? st.node->op->str() : st.node->label()) << "\n"
        << (st.skinny || st.prologue >= 0 ? kHeader256 : kHeader) << name << body
        << "#ifdef THEA_EMU\nextern \"C\" void " << name
        << "__emu(const long long* p, const long long* a) { " << name
        << "(*reinterpret_cast<const thea_params<" << nw << ">*>(p), a); }\n#endif\n\n";
  }
  plan.source = src.str();
}

}  // namespace thea::cuda
