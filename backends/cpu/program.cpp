#include "program.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <unordered_set>

#include "thea/error.hpp"
#include "thea/op.hpp"

#if defined(THEA_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace thea::cpu {

using namespace thea::sched;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string program_name(const FunctionGraph& fg) {
  static std::atomic<int> counter{0};
  std::string s = "#" + std::to_string(++counter) + " (outputs:";
  for (const NodePtr& o : fg.outputs()) s += " " + o->label();
  if (!fg.updates().empty()) {
    s += "; updates:";
    for (const UpdatePair& u : fg.updates()) s += " " + u.target->label();
  }
  return s + ")";
}

struct LaunchCtx {
  PartFn fn;
  void* const* P;
  const std::int64_t* D;
  void* S;
  int nparts;
};

void launch_part(void* c, int part) {
  auto* ctx = static_cast<LaunchCtx*>(c);
  ctx->fn(ctx->P, ctx->D, ctx->S, part, ctx->nparts);
}

struct CombineCtx {
  CombineFn fn;
  void* const* P;
  const std::int64_t* D;
  void* S;
  int nsplit, nparts;
};

void combine_part(void* c, int part) {
  auto* ctx = static_cast<CombineCtx*>(c);
  ctx->fn(ctx->P, ctx->D, ctx->S, part, ctx->nsplit, ctx->nparts);
}

std::int64_t dim_value(const Dim& d, const std::vector<std::int64_t>& dims) {
  return d.is_static() ? d.size : dims[d.sym];
}

int clamp_parts(std::int64_t want, std::int64_t most) {
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(want, most)));
}

// dst (cols x rows) = src (rows x cols) transposed, for elements of `size` bytes.
template <class E>
void transpose_as(const void* src, void* dst, std::int64_t rows, std::int64_t cols) {
  const E* s = static_cast<const E*>(src);
  E* d = static_cast<E*>(dst);
  for (std::int64_t j = 0; j < cols; ++j)
    for (std::int64_t i = 0; i < rows; ++i) d[j * rows + i] = s[i * cols + j];
}
void transpose_bytes(const void* src, void* dst, std::int64_t rows, std::int64_t cols,
                     std::size_t size) {
  switch (size) {
    case 2:
      transpose_as<std::uint16_t>(src, dst, rows, cols);
      break;
    case 4:
      transpose_as<std::uint32_t>(src, dst, rows, cols);
      break;
    case 8:
      transpose_as<std::uint64_t>(src, dst, rows, cols);
      break;
    default:
      throw Error("cpu program: cannot transpose elements of " + std::to_string(size) +
                  " bytes (a bug)");
  }
}

// A shared K x N matrix held transposed (N x K) for a training chain between calls
// (KernelCode::chain_transposed). While the host copy is stale this is the value; reading
// the variable elsewhere (get_value, another function) rebuilds the host copy once.
class TransposedCopy final : public DeviceMirror {
 public:
  TransposedCopy(std::int64_t rows, std::int64_t cols, Dtype dtype)
      : rows_(rows),
        cols_(cols),
        dtype_(dtype),
        data_(static_cast<std::size_t>(std::max<std::int64_t>(rows * cols, 1)) *
              dtype_size(dtype)) {}
  void download(Tensor& host) override {
    if (!valid_) throw Error("cpu program: transposed copy read while stale (a bug)");
    transpose_bytes(data_.data(), host.raw_data(), cols_, rows_, dtype_size(dtype_));
  }
  void host_changed() override { valid_ = false; }
  bool fits(const Tensor& host) const {
    return host.dtype() == dtype_ && host.ndim() == 2 && host.shape()[0] == rows_ &&
           host.shape()[1] == cols_;
  }
  bool valid() const { return valid_; }
  void pack(const Tensor& host) {
    Tensor dense = host.contiguous();
    transpose_bytes(dense.raw_data(), data_.data(), rows_, cols_, dtype_size(dtype_));
    valid_ = true;
  }
  void* data() { return data_.data(); }

 private:
  std::int64_t rows_, cols_;
  Dtype dtype_;
  Storage data_;
  bool valid_ = false;
};

}  // namespace

CpuProgram::CpuProgram(const FunctionGraph& fg, Schedule schedule, MemPlan plan, Rendered rendered,
                       std::shared_ptr<SharedLibrary> library, CompileInfo info)
    : order_(fg.toposort()),
      inputs_(fg.inputs()),
      schedule_(std::move(schedule)),
      plan_(std::move(plan)),
      rendered_(std::move(rendered)),
      library_(std::move(library)),
      info_(std::move(info)),
      pool_(&ThreadPool::global()) {
  const std::size_t nb = schedule_.buffers.size();
  root_.resize(nb);
  for (std::size_t b = 0; b < nb; ++b) {
    int r = static_cast<int>(b);
    while (schedule_.buffers[r].kind == BufferKind::View) r = schedule_.buffers[r].base;
    root_[b] = r;
  }
  constants_.resize(nb);
  for (std::size_t b = 0; b < nb; ++b)
    if (schedule_.buffers[b].kind == BufferKind::Constant)
      constants_[b] = schedule_.buffers[b].node->value.contiguous();
  fns_.resize(schedule_.kernels.size());
  scratch_.resize(schedule_.kernels.size());
  for (std::size_t k = 0; k < schedule_.kernels.size(); ++k) {
    const KernelCode& c = rendered_.kernels[k];
    if (!library_ && (!c.fn.empty() || !c.prep.empty() || !c.finish.empty()))
      throw CompileError("cpu backend: kernels were rendered but no library was loaded");
    if (!c.fn.empty()) fns_[k].fn = reinterpret_cast<PartFn>(library_->symbol(c.fn));
    if (!c.finish.empty()) fns_[k].finish = reinterpret_cast<FinishFn>(library_->symbol(c.finish));
    if (!c.prep.empty()) fns_[k].prep = reinterpret_cast<PrepFn>(library_->symbol(c.prep));
    if (!c.combine.empty())
      fns_[k].combine = reinterpret_cast<CombineFn>(library_->symbol(c.combine));
    if (c.scratch_bytes > 0 && c.launch != Launch::Chain)
      scratch_[k] = std::make_shared<Storage>(static_cast<std::size_t>(c.scratch_bytes));
  }
  std::unordered_set<const Node*> seen;
  for (const NodePtr& n : order_) {
    if (n->kind != NodeKind::Apply || n->op->value_inputs().empty()) continue;
    value_consumers_.push_back(n.get());
    for (int i : n->op->value_inputs())
      if (seen.insert(n->inputs[i].get()).second) value_nodes_.push_back(n->inputs[i]);
  }
  has_value_shapes_ = !value_nodes_.empty();
  ptrs_.assign(nb, nullptr);
  outputs_now_.resize(nb);
  host_values_.resize(nb);
  staged_inputs_.resize(inputs_.size());
  input_refs_.resize(inputs_.size());
  nparts_.assign(schedule_.kernels.size(), 1);
  adapt_.assign(schedule_.kernels.size(), Adapt{});
  find_borrowed_views();
  keep_transposed_.assign(nb, false);
  for (const KernelCode& c : rendered_.kernels)
    if (c.launch == Launch::Chain && c.chain_transposed >= 0)
      keep_transposed_[c.chain_transposed] = true;
  if (profiling_enabled()) {
    profile_ = register_profile(program_name(fg));
    profile_->compile_seconds = info_.seconds;
    profile_->cache_hit = info_.cache_hit;
    profile_->threads = pool_->threads();
    std::size_t chain_head = 0;
    for (std::size_t k = 0; k < schedule_.kernels.size(); ++k) {
      if (rendered_.kernels[k].launch == Launch::Chain) chain_head = k;
      KernelStats st;
      st.name = schedule_.kernels[k].name;
      for (const NodePtr& n : schedule_.kernels[k].nodes)
        st.what += (st.what.empty() ? "" : " ") + n->op->str();
      if (rendered_.kernels[k].launch == Launch::Absorbed) {
        // Timed with the chain's head: its line names the members.
        KernelStats& head = profile_->kernels[chain_head];
        head.name += "+" + st.name.substr(0, st.name.find('_'));
        head.what += " | " + st.what;
        st.name = "(" + st.name + ": in the chain above)";
        st.what.clear();
      }
      profile_->kernels.push_back(st);
    }
  }
}

void CpuProgram::evaluate_values(const std::vector<Tensor>& inputs) {
  // Small host computations (slice bounds from an index input): the reference ops.
  values_.clear();
  std::function<Tensor(const NodePtr&)> eval = [&](const NodePtr& n) -> Tensor {
    auto it = values_.find(n.get());
    if (it != values_.end()) return it->second;
    Tensor v;
    switch (n->kind) {
      case NodeKind::Input:
        for (std::size_t i = 0; i < inputs_.size(); ++i)
          if (inputs_[i] == n) v = inputs[i];
        break;
      case NodeKind::Shared: {
        SharedState& st = *n->shared;
        if (!st.host_valid && st.mirror) {
          st.mirror->download(st.value);
          st.host_valid = true;
        }
        v = st.value;
        break;
      }
      case NodeKind::Constant:
        v = n->value;
        break;
      case NodeKind::Apply: {
        std::vector<Tensor> ins;
        for (const NodePtr& in : n->inputs) ins.push_back(eval(in));
        v = n->op->perform(ins);
        break;
      }
    }
    values_[n.get()] = v;
    return v;
  };
  for (const NodePtr& n : value_nodes_) eval(n);
}

// Every other node's shape follows from its inputs' shapes, so with the same input shapes
// the layout stays valid as long as each value consumer (a slice with run-time bounds)
// still has the shape it had: checked in order, from the last layout's shapes and this
// call's values. A training step over minibatch i then skips re-planning.
bool CpuProgram::value_shapes_unchanged() const {
  std::vector<Shape> in;
  std::vector<const Tensor*> vals;
  for (const Node* n : value_consumers_) {
    in.clear();
    vals.clear();
    for (const NodePtr& x : n->inputs) {
      auto sit = last_shapes_.find(x.get());
      if (sit == last_shapes_.end()) return false;
      in.push_back(sit->second);
      auto vit = values_.find(x.get());
      vals.push_back(vit == values_.end() ? nullptr : &vit->second);
    }
    auto mine = last_shapes_.find(n);
    if (mine == last_shapes_.end()) return false;
    try {
      if (n->op->infer_shape(in, vals) != mine->second) return false;
    } catch (const Error&) {
      return false;  // plan_shapes reports it, with the context
    }
  }
  return true;
}

void CpuProgram::plan_shapes(const std::vector<Tensor>& inputs) {
  std::unordered_map<const Node*, Shape>& shapes = last_shapes_;
  shapes.clear();
  planned_ = false;  // until this layout is complete
  // Inputs first: an input the outputs do not need (replaced through givens) has a buffer too.
  for (std::size_t i = 0; i < inputs_.size(); ++i) shapes[inputs_[i].get()] = inputs[i].shape();
  for (const NodePtr& n : order_) {
    switch (n->kind) {
      case NodeKind::Input:
        for (std::size_t i = 0; i < inputs_.size(); ++i)
          if (inputs_[i] == n) shapes[n.get()] = inputs[i].shape();
        break;
      case NodeKind::Shared:
        shapes[n.get()] = n->shared->value.shape();
        break;
      case NodeKind::Constant:
        shapes[n.get()] = n->value.shape();
        break;
      case NodeKind::Apply: {
        std::vector<Shape> in;
        std::vector<const Tensor*> vals;
        for (const NodePtr& x : n->inputs) {
          in.push_back(shapes.at(x.get()));
          auto vit = values_.find(x.get());
          vals.push_back(vit == values_.end() ? nullptr : &vit->second);
        }
        try {
          shapes[n.get()] = n->op->infer_shape(in, vals);
        } catch (const Error& e) {
          std::string msg =
              "[" + n->op->str() + "] at " + n->site.str() + " (" + n->label() + "): " + e.what();
          for (std::size_t i = 0; i < n->inputs.size(); ++i)
            msg += "\n  input " + std::to_string(i) + ": " + n->inputs[i]->describe() +
                   " with shape " + shape_str(in[i]);
          if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(msg);
          if (dynamic_cast<const ValueError*>(&e)) throw ValueError(msg);
          if (dynamic_cast<const TypeError*>(&e)) throw TypeError(msg);
          throw Error(msg);
        }
        // Reductions without an identity over empty axes fail as perform() does.
        if (auto* red = dynamic_cast<const Reduce*>(n->op.get());
            red && (red->kind() == ReduceKind::Max || red->kind() == ReduceKind::Min)) {
          const Shape& x = in[0];
          for (std::size_t a = 0; a < x.size(); ++a) {
            bool reduced = red->axes().empty() ||
                           std::count(red->axes().begin(), red->axes().end(), static_cast<int>(a));
            if (reduced && x[a] == 0 && shape_numel(shapes[n.get()]) > 0)
              throw ValueError("[" + n->op->str() + "] at " + n->site.str() +
                               ": zero-size reduction of " + n->inputs[0]->describe() +
                               " with shape " + shape_str(x) + " has no identity");
          }
        }
        if (auto* arg = dynamic_cast<const ArgReduce*>(n->op.get())) {
          const Shape& x = in[0];
          bool empty = arg->axis() < 0 ? shape_numel(x) == 0 : x[arg->axis()] == 0;
          if (empty && shape_numel(shapes[n.get()]) > 0)
            throw ValueError("[" + n->op->str() + "] at " + n->site.str() + ": attempt to get " +
                             n->op->name() + " of an empty sequence (" + n->inputs[0]->describe() +
                             " has shape " + shape_str(x) + ")");
        }
        break;
      }
    }
  }
  // Bind the symbols and check every assumption the kernels were specialised on.
  // After the symbols: per row chain, the rows after its A operand (set every call).
  dims_.assign(schedule_.num_syms + schedule_.row_chains.size(), 0);
  for (int s = 0; s < schedule_.num_syms; ++s) {
    const auto& [node, axis] = schedule_.sym_sources[s];
    dims_[s] = shapes.at(node.get())[axis];
  }
  for (const auto& [node, dims] : schedule_.node_dims) {
    auto it = shapes.find(node.get());
    if (it == shapes.end()) continue;
    const Shape& sh = it->second;
    for (std::size_t a = 0; a < dims.size() && a < sh.size(); ++a) {
      std::int64_t want = dim_value(dims[a], dims_);
      if (sh[a] == want) continue;
      // Find who fixed the size, for the message.
      std::string other;
      if (!dims[a].is_static()) {
        const auto& [src, sax] = schedule_.sym_sources[dims[a].sym];
        other = src->describe() + " has size " + std::to_string(want) + " on axis " +
                std::to_string(sax);
      } else {
        other = "its type says " + std::to_string(want);
      }
      throw ShapeError("[" + (node->op ? node->op->str() : node->label()) + "] at " +
                       node->site.str() + ": " + node->describe() + " has shape " + shape_str(sh) +
                       " at run time, but axis " + std::to_string(a) + " must match: " + other +
                       " (only dimensions of static size 1 broadcast)");
    }
  }
  const std::size_t nb = schedule_.buffers.size();
  buffer_shapes_.assign(nb, {});
  std::vector<std::int64_t> nbytes(nb, 0);
  for (std::size_t b = 0; b < nb; ++b) {
    const Node* node = schedule_.buffers[b].node.get();
    auto it = shapes.find(node);
    // A shared variable only written (an update target nothing reads) is not in the order.
    if (it == shapes.end() && node->kind == NodeKind::Shared)
      it = shapes.emplace(node, node->shared->value.shape()).first;
    if (it == shapes.end() && node->kind == NodeKind::Constant)
      it = shapes.emplace(node, node->value.shape()).first;
    if (it == shapes.end())
      throw Error("cpu program: no shape for buffer of " + node->describe() + " (a bug)");
    buffer_shapes_[b] = it->second;
    nbytes[b] = shape_numel(buffer_shapes_[b]) *
                static_cast<std::int64_t>(dtype_size(schedule_.buffers[b].dtype));
  }
  ArenaLayout layout = layout_arena(plan_, nbytes);
  arena_offset_ = layout.offset;
  if (!arena_ || static_cast<std::int64_t>(arena_->nbytes()) < layout.size) {
    arena_ = std::make_shared<Storage>(
        static_cast<std::size_t>(std::max<std::int64_t>(layout.size, 64)));
  }
  arena_size_ = layout.size;
  for (std::size_t b = 0; b < nb; ++b)
    if (arena_offset_[b] >= 0)
      ptrs_[b] = static_cast<unsigned char*>(arena_->data()) + arena_offset_[b];

  // Parts per kernel: from sizes only, so results do not depend on the thread count.
  std::size_t partial_bytes = 0;
  for (std::size_t k = 0; k < schedule_.kernels.size(); ++k) {
    const Kernel& kr = schedule_.kernels[k];
    const KernelCode& code = rendered_.kernels[k];
    int parts = 1;
    if (code.launch == Launch::Loop) {
      std::int64_t outer = 1, inner = 1;
      for (std::size_t d = 0; d < kr.loop.domain.size(); ++d)
        (kr.loop.inner[d] ? inner : outer) *= dim_value(kr.loop.domain[d], dims_);
      const std::int64_t work = outer * inner * kr.loop.passes *
                                (1 + static_cast<std::int64_t>(kr.loop.exprs.size()) / 4);
      // A fork-join costs a few microseconds on a shared 2-core machine: only loops with
      // enough work are split (THEA_CPU_PART_WORK tunes the threshold for experiments).
      static const std::int64_t min_work = [] {
        const char* v = std::getenv("THEA_CPU_PART_WORK");
        return v && *v ? std::max<std::int64_t>(1024, std::atoll(v)) : std::int64_t{16384};
      }();
      parts = work < min_work
                  ? 1
                  : clamp_parts(std::min<std::int64_t>(outer, work / (min_work / 2)), 64);
      if (kr.loop.domain.empty()) parts = 1;
      partial_bytes = std::max(partial_bytes, static_cast<std::size_t>(parts) *
                                                  static_cast<std::size_t>(code.finals) * 8);
    } else if (code.launch == Launch::Chain && code.chain_reduces) {
      // Every part sums its own share of the reducing product: a fixed number of parts per
      // row count (not per thread count) keeps results identical across thread counts. Two
      // parts of 64 rows for the tutorial's minibatch of 128.
      const std::int64_t m = dim_value(kr.gemm.m, dims_);
      parts = clamp_parts(m / 64, 8);
    } else if (code.launch == Launch::GemmRows || code.launch == Launch::Blas ||
               code.launch == Launch::GemmTN || code.launch == Launch::Chain) {
      const GemmKernel& g = kr.gemm;
      const std::int64_t m = dim_value(g.m, dims_), n = dim_value(g.n, dims_),
                         kk = dim_value(g.k, dims_);
      const std::int64_t flops = 2 * m * n * kk;
      const std::int64_t units = code.launch == Launch::GemmTN ? (m + code.lanes - 1) / code.lanes
                                                               : std::max<std::int64_t>(1, m / 8);
      parts = flops < 400000 ? 1 : clamp_parts(std::min<std::int64_t>(units, flops / 250000), 32);
    }
    nparts_[k] = parts;
    if (code.launch == Launch::Chain) {
      const auto bytes = static_cast<std::size_t>(chain_scratch_bytes(code, parts));
      if (!scratch_[k] || scratch_[k]->nbytes() < bytes)
        scratch_[k] = std::make_shared<Storage>(std::max<std::size_t>(bytes, 64));
    }
  }
  if (partials_.size() < partial_bytes) partials_.resize(partial_bytes);
  signature_.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) signature_[i] = inputs[i].shape();
  planned_ = true;
}

Tensor CpuProgram::buffer_tensor(int b) {
  const Buffer& buf = schedule_.buffers[b];
  switch (buf.kind) {
    case BufferKind::Input:
      return *input_refs_[buf.input];
    case BufferKind::Shared:
      return buf.node->shared->value;
    case BufferKind::Constant:
      return constants_[b];
    case BufferKind::View: {
      Tensor base = buffer_tensor(buf.base);
      if (buf.reinterpret) return base.reshape(buffer_shapes_[b]);
      // Kept axes in view order, then the (size-1) axes the view drops.
      std::vector<int> perm;
      for (int a : buf.axis_map)
        if (a >= 0) perm.push_back(a);
      for (int a = 0; a < base.ndim(); ++a)
        if (std::find(perm.begin(), perm.end(), a) == perm.end()) perm.push_back(a);
      return base.permute(perm).reshape(buffer_shapes_[b]);
    }
    case BufferKind::Temp:
      break;
  }
  const BufferPlan& p = plan_.buffers[b];
  if (borrowed_[b] && host_values_[b].defined()) return host_values_[b];
  if (p.placement == Placement::Output) return outputs_now_[b];
  if (p.placement == Placement::Alias) {
    Tensor t = buffer_tensor(p.alias);
    return t;
  }
  const std::int64_t elem = static_cast<std::int64_t>(dtype_size(buf.dtype));
  return Tensor(arena_, arena_offset_[b] / elem, buffer_shapes_[b],
                contiguous_strides(buffer_shapes_[b]), buf.dtype);
}

// A host step whose op returns a view (a minibatch slice trX[i*bs:(i+1)*bs] taken through
// givens) can hand the kernels the viewed memory instead of copying it into the arena, when
// nothing could write through it or see the arena slot instead: only kernels read the
// buffer, nothing aliases it, it is no output, and no kernel of this function writes the
// viewed storage (an in-place update of the dataset would change what later readers see).
void CpuProgram::find_borrowed_views() {
  const std::size_t nb = schedule_.buffers.size();
  borrowed_.assign(nb, false);
  std::vector<bool> written(nb, false);
  for (const Kernel& k : schedule_.kernels)
    for (int b : k.writes) written[root_[b]] = true;
  for (std::size_t u = 0; u < schedule_.update_targets.size(); ++u)
    written[root_[schedule_.update_targets[u]]] = true;
  for (const Kernel& k : schedule_.kernels) {
    if (k.kind != KernelKind::Host || !k.host.node->op->traits().view) continue;
    const int out = k.host.out;
    if (plan_.buffers[out].placement != Placement::Arena) continue;
    bool ok = !k.host.inputs.empty() && !written[root_[k.host.inputs[0]]] &&
              !storage_shared(schedule_, plan_, out);
    for (int o : schedule_.outputs) ok = ok && root_[o] != out;
    for (int v : schedule_.update_values) ok = ok && root_[v] != out;
    borrowed_[out] = ok;
  }
}

void CpuProgram::run_host(std::size_t k) {
  const HostKernel& h = schedule_.kernels[k].host;
  std::vector<Tensor> ins;
  ins.reserve(h.inputs.size());
  for (int b : h.inputs) ins.push_back(buffer_tensor(b));
  const Node& n = *h.node;
  Tensor out;
  try {
    out = n.op->perform(ins);
  } catch (const Error& e) {
    std::string msg =
        "[" + n.op->str() + "] at " + n.site.str() + " (" + n.label() + "): " + e.what();
    for (std::size_t i = 0; i < ins.size(); ++i)
      msg += "\n  input " + std::to_string(i) + ": " + n.inputs[i]->describe() + " with value " +
             ins[i].describe();
    if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(msg);
    if (dynamic_cast<const ValueError*>(&e)) throw ValueError(msg);
    if (dynamic_cast<const TypeError*>(&e)) throw TypeError(msg);
    throw Error(msg);
  }
  if (out.dtype() != schedule_.buffers[h.out].dtype || out.shape() != buffer_shapes_[h.out])
    throw Error("[" + n.op->str() + "] at " + n.site.str() + ": produced " + out.describe() +
                " but shape inference said " + shape_str(buffer_shapes_[h.out]) +
                " (a bug in the op)");
  if (borrowed_[h.out]) {
    if (out.is_contiguous()) {
      host_values_[h.out] = out;
      ptrs_[h.out] = const_cast<void*>(out.raw_data());
      return;
    }
    host_values_[h.out] = Tensor();  // copied this call: back to the arena slot
    ptrs_[h.out] = static_cast<unsigned char*>(arena_->data()) + arena_offset_[h.out];
  }
  Tensor dst = buffer_tensor(h.out);
  dst.copy_from(out);
}

void CpuProgram::run_blas(std::size_t k) {
  const GemmKernel& g = schedule_.kernels[k].gemm;
#if defined(THEA_HAVE_OPENBLAS)
  if (fns_[k].prep) fns_[k].prep(ptrs_.data(), dims_.data(), nullptr);
  const std::int64_t m = dim_value(g.m, dims_), n = dim_value(g.n, dims_),
                     kk = dim_value(g.k, dims_);
  const bool ta = g.trans_a, tb = g.trans_b || g.b_vector;
  const std::int64_t lda = ta ? m : kk, ldb = tb ? kk : n, ldc = n;
  auto scalar = [&](const ScalarArg& a) -> double {
    if (a.is_const) return a.value;
    const void* p = ptrs_[root_[a.buffer]];
    return g.dtype == Dtype::Float32 ? *static_cast<const float*>(p)
                                     : *static_cast<const double*>(p);
  };
  const double alpha = scalar(g.alpha);
  const double beta = g.c_in >= 0 ? scalar(g.beta) : 0.0;
  struct Ctx {
    const GemmKernel* g;
    void* a;
    void* b;
    void* c;
    std::int64_t m, n, k, lda, ldb, ldc;
    bool ta, tb;
    double alpha, beta;
    int nparts;
  } ctx{&g,
        ptrs_[root_[g.a]],
        ptrs_[root_[g.b]],
        ptrs_[root_[g.out]],
        m,
        n,
        kk,
        lda,
        ldb,
        ldc,
        ta,
        tb,
        alpha,
        beta,
        nparts_[k]};
  auto part = [](void* c, int p) {
    auto* x = static_cast<Ctx*>(c);
    const std::int64_t i0 = x->m * p / x->nparts, i1 = x->m * (p + 1) / x->nparts;
    if (i1 <= i0) return;
    const std::int64_t aoff = x->ta ? i0 : i0 * x->lda;
    if (x->g->dtype == Dtype::Float32) {
      cblas_sgemm(CblasRowMajor, x->ta ? CblasTrans : CblasNoTrans,
                  x->tb ? CblasTrans : CblasNoTrans, static_cast<int>(i1 - i0),
                  static_cast<int>(x->n), static_cast<int>(x->k), static_cast<float>(x->alpha),
                  static_cast<const float*>(x->a) + aoff, static_cast<int>(x->lda),
                  static_cast<const float*>(x->b), static_cast<int>(x->ldb),
                  static_cast<float>(x->beta), static_cast<float*>(x->c) + i0 * x->ldc,
                  static_cast<int>(x->ldc));
    } else {
      cblas_dgemm(CblasRowMajor, x->ta ? CblasTrans : CblasNoTrans,
                  x->tb ? CblasTrans : CblasNoTrans, static_cast<int>(i1 - i0),
                  static_cast<int>(x->n), static_cast<int>(x->k), x->alpha,
                  static_cast<const double*>(x->a) + aoff, static_cast<int>(x->lda),
                  static_cast<const double*>(x->b), static_cast<int>(x->ldb), x->beta,
                  static_cast<double*>(x->c) + i0 * x->ldc, static_cast<int>(x->ldc));
    }
  };
  if (m > 0 && n > 0) {
    if (kk == 0) {
      // BLAS leaves C untouched for k = 0 only when beta == 1; make it explicit.
      Tensor c = buffer_tensor(g.out);
      if (g.c_in >= 0) {
        Tensor scaled = c.astype(Dtype::Float64);
        std::vector<double> v = scaled.to_vector();
        for (double& x : v) x *= beta;
        c.copy_from(Tensor::from_vector(v, c.shape()));
      } else {
        c.fill(0);
      }
    } else {
      launch(k, part, &ctx);
    }
  }
#else
  (void)g;
  throw BackendError("cpu backend built without OpenBLAS");
#endif
}

void CpuProgram::launch(std::size_t k, ThreadPool::PartFn fn, void* ctx) {
  const int nparts = nparts_[k];
  if (nparts <= 1 || pool_->threads() <= 1) {
    pool_->run(nparts, fn, ctx, true);
    return;
  }
  Adapt& a = adapt_[k];
  ++a.launches;
  bool solo;
  if (a.trial > 0) {
    solo = a.trial_solo;  // an ongoing trial of the other way
    --a.trial;
  } else if (a.n_par < 2 || a.n_solo < 2 || a.launches % 64 == 0) {
    // Learn both ways, then re-check the slower one now and then. A trial of the parallel
    // way runs 3 launches: the first may wake sleeping helpers and is not counted.
    solo = a.n_par >= 2 && (a.n_solo < 2 || a.solo >= a.par);
    a.trial_solo = solo;
    a.trial = solo ? 0 : 2;
  } else {
    solo = a.solo < a.par;
  }
  const auto t0 = std::chrono::steady_clock::now();
  pool_->run(nparts, fn, ctx, solo);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const bool cold = !solo && a.last_solo;  // helpers may have been asleep
  a.last_solo = solo;
  if (cold) return;
  double& avg = solo ? a.solo : a.par;
  int& n = solo ? a.n_solo : a.n_par;
  avg = n == 0 ? dt : 0.75 * avg + 0.25 * dt;
  ++n;
}

void CpuProgram::run_kernel(std::size_t k) {
  const KernelCode& code = rendered_.kernels[k];
  const KernelFns& f = fns_[k];
  switch (code.launch) {
    case Launch::Loop: {
      LaunchCtx ctx{f.fn, ptrs_.data(), dims_.data(), partials_.data(), nparts_[k]};
      launch(k, launch_part, &ctx);
      if (f.finish) f.finish(ptrs_.data(), dims_.data(), partials_.data(), nparts_[k]);
      break;
    }
    case Launch::GemmRows:
    case Launch::GemmTN: {
      void* S = scratch_[k] ? scratch_[k]->data() : nullptr;
      if (f.prep) f.prep(ptrs_.data(), dims_.data(), S);
      LaunchCtx ctx{f.fn, ptrs_.data(), dims_.data(), S, nparts_[k]};
      launch(k, launch_part, &ctx);
      break;
    }
    case Launch::Chain: {
      if (code.chain_prefetch_slot >= 0) set_rows_ahead(k);
      void* S = scratch_[k]->data();
      if (f.prep) f.prep(ptrs_.data(), dims_.data(), S);
      LaunchCtx ctx{f.fn, ptrs_.data(), dims_.data(), S, nparts_[k]};
      launch(k, launch_part, &ctx);
      // The loop's finish may still read the old weights (a decay term in the cost): it
      // runs before the combine writes them.
      f.finish(ptrs_.data(), dims_.data(), S, nparts_[k]);
      if (f.combine) {
        // Each thread sums its share of the partials: the threads' partials sit in their own
        // caches, so one thread alone would fetch every other thread's whole product.
        const int nsplit = pool_->threads() > 1 && nparts_[k] > 1 ? nparts_[k] : 1;
        CombineCtx cc{f.combine, ptrs_.data(), dims_.data(), S, nsplit, nparts_[k]};
        pool_->run(nsplit, combine_part, &cc, adapt_[k].last_solo);
      }
      break;
    }
    case Launch::Absorbed:
      break;
    case Launch::Blas:
      run_blas(k);
      break;
    case Launch::Host:
      run_host(k);
      break;
  }
}

std::vector<Tensor> CpuProgram::run(const std::vector<Tensor>& inputs) {
  const double t_start = profile_ ? now_seconds() : 0;
  if (inputs.size() != inputs_.size())
    throw ValueError("cpu program: expected " + std::to_string(inputs_.size()) + " inputs, got " +
                     std::to_string(inputs.size()));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (t.dtype() != inputs_[i]->type.dtype || t.ndim() != inputs_[i]->type.ndim())
      throw TypeError("cpu program: input " + std::to_string(i) + " " + inputs_[i]->describe() +
                      " got " + t.describe());
    // Kernels read dense row-major inputs; a strided view (a column slice) is copied once.
    if (t.is_contiguous()) {
      input_refs_[i] = &t;
    } else {
      staged_inputs_[i] = t.contiguous();
      input_refs_[i] = &staged_inputs_[i];
    }
  }
  if (has_value_shapes_) evaluate_values(inputs);
  bool same = planned_ && signature_.size() == inputs.size();
  for (std::size_t i = 0; same && i < inputs.size(); ++i) same = signature_[i] == inputs[i].shape();
  if (same && has_value_shapes_) same = value_shapes_unchanged();
  if (!same) plan_shapes(inputs);

  const std::size_t nb = schedule_.buffers.size();
  for (std::size_t b = 0; b < nb; ++b) {
    const Buffer& buf = schedule_.buffers[b];
    switch (buf.kind) {
      case BufferKind::Input:
        ptrs_[b] = const_cast<void*>(input_refs_[buf.input]->raw_data());
        break;
      case BufferKind::Shared: {
        SharedState& s = *buf.node->shared;
        if (keep_transposed_[b]) {
          ptrs_[b] = bind_transposed(s);
          break;
        }
        if (!s.host_valid && s.mirror) {
          s.mirror->download(s.value);
          s.host_valid = true;
        }
        ptrs_[b] = s.value.raw_data();
        break;
      }
      case BufferKind::Constant:
        ptrs_[b] = constants_[b].raw_data();
        break;
      default:
        break;
    }
    if (plan_.buffers[b].placement == Placement::Output) {
      outputs_now_[b] = Tensor::empty(buffer_shapes_[b], buf.dtype);
      ptrs_[b] = outputs_now_[b].raw_data();
    }
  }
  // Views and in-place values use their owner's storage.
  for (std::size_t b = 0; b < nb; ++b) {
    const int r = storage_owner(schedule_, plan_, static_cast<int>(b));
    if (r != static_cast<int>(b)) ptrs_[b] = ptrs_[r];
  }
  // The generated code indexes P by root buffer id; in-place values alias their targets.
  for (std::size_t k = 0; k < schedule_.kernels.size(); ++k) {
    if (rendered_.kernels[k].launch == Launch::Absorbed) continue;
    if (profile_) {
      const double t0 = now_seconds();
      run_kernel(k);
      profile_->kernels[k].seconds += now_seconds() - t0;
      ++profile_->kernels[k].calls;
    } else {
      run_kernel(k);
    }
  }

  // Outputs first: they are the values before the updates (Theano's semantics).
  std::vector<Tensor> results;
  results.reserve(schedule_.outputs.size());
  for (int b : schedule_.outputs) {
    // The first occurrence of a fresh output tensor is handed over as is (views of it may
    // still be read for later outputs, so it stays in outputs_now_ until the end).
    bool first = plan_.buffers[b].placement == Placement::Output && outputs_now_[b].defined();
    for (std::size_t i = 0; first && i < results.size(); ++i)
      if (results[i].storage() == outputs_now_[b].storage()) first = false;
    if (first) {
      results.push_back(outputs_now_[b]);
    } else {
      // Outputs never alias inputs, shared state or each other (Theano's borrow=False).
      results.push_back(buffer_tensor(b).clone());
    }
  }
  // Updates: every new value was computed from the old ones; now commit them.
  const auto& targets = schedule_.update_targets;
  const auto& values = schedule_.update_values;
  std::vector<Tensor> staged;
  for (std::size_t u = 0; u < targets.size(); ++u) {
    if (plan_.update_inplace[u]) continue;
    Tensor v = buffer_tensor(values[u]);
    // A value living in another shared variable (w <- v, v <- w) is copied first.
    if (schedule_.buffers[root_[values[u]]].kind == BufferKind::Shared) v = v.clone();
    if (staged.empty()) staged.resize(targets.size());
    staged[u] = v;
  }
  for (std::size_t u = 0; u < targets.size(); ++u) {
    SharedState& s = *schedule_.buffers[targets[u]].node->shared;
    ++s.version;
    if (keep_transposed_[targets[u]]) continue;  // the new value is in its transposed copy
    if (!plan_.update_inplace[u]) s.value.copy_from(staged[u]);
    s.host_valid = true;
    if (s.mirror) s.mirror->host_changed();
  }

  for (int b : schedule_.outputs) outputs_now_[b] = Tensor();
  for (std::size_t i = 0; i < staged_inputs_.size(); ++i) {
    if (staged_inputs_[i].defined()) staged_inputs_[i] = Tensor();
    input_refs_[i] = nullptr;
  }
  if (profile_) {
    ++profile_->calls;
    profile_->run_seconds += now_seconds() - t_start;
  }
  return results;
}

// The transposed copy of a shared matrix a chain keeps (KernelCode::chain_transposed): reused
// while nothing else changed the variable, else rebuilt from the host value (fetched first
// from wherever it is newest). From here on the copy is the value: the chain updates it in
// place, so the host copy is stale even if the call fails midway.
void* CpuProgram::bind_transposed(SharedState& s) {
  auto* copy = dynamic_cast<TransposedCopy*>(s.mirror.get());
  if (copy && !copy->fits(s.value)) copy = nullptr;
  if (!copy || !copy->valid()) {
    if (!s.host_valid && s.mirror) {
      s.mirror->download(s.value);
      s.host_valid = true;
    }
    if (!copy) {
      auto fresh =
          std::make_shared<TransposedCopy>(s.value.shape()[0], s.value.shape()[1], s.value.dtype());
      copy = fresh.get();
      s.mirror = std::move(fresh);
    }
    copy->pack(s.value);
  }
  s.host_valid = false;
  return copy->data();
}

// A minibatch passed as a slice of a larger array (the tutorial's trX[start:end]) is usually
// followed by the next one: a chain prefetches the rows that follow its A operand in the same
// storage, as many as exist. Anything else (a standalone tensor) has none to prefetch.
void CpuProgram::set_rows_ahead(std::size_t k) {
  // THEA_CPU_PREFETCH=0 turns it off (minibatches drawn in random order gain nothing).
  static const bool enabled = !env_switched_off("THEA_CPU_PREFETCH");
  const KernelCode& c = rendered_.kernels[k];
  const int ab = schedule_.kernels[k].gemm.a;
  const Buffer& a = schedule_.buffers[ab];
  const Tensor* t = nullptr;
  if (a.kind == BufferKind::Input) t = input_refs_[a.input];
  if (borrowed_[ab] && host_values_[ab].defined()) t = &host_values_[ab];
  std::int64_t rows = 0;
  if (enabled && t && t->ndim() == 2 && t->shape()[1] > 0) {
    const auto elems = static_cast<std::int64_t>(t->storage()->nbytes() / dtype_size(t->dtype()));
    rows = std::max<std::int64_t>(0, elems - t->offset() - t->numel()) / t->shape()[1];
  }
  dims_[c.chain_prefetch_slot] = rows;
}

std::size_t CpuProgram::kernel_count() const {
  std::size_t n = 0;
  for (const KernelCode& c : rendered_.kernels) n += c.launch == Launch::Absorbed ? 0 : 1;
  return n;
}

std::string CpuProgram::describe() const {
  std::ostringstream os;
  for (std::size_t k = 0; k < schedule_.kernels.size(); ++k) {
    const Kernel& kr = schedule_.kernels[k];
    const KernelCode& c = rendered_.kernels[k];
    const char* how = c.launch == Launch::Loop       ? "fused loop"
                      : c.launch == Launch::GemmRows ? "generated gemm"
                      : c.launch == Launch::GemmTN   ? "generated gemm (A^T)"
                      : c.launch == Launch::Blas     ? "OpenBLAS gemm"
                      : c.launch == Launch::Chain    ? "row chain: gemm, then loop on its rows"
                      : c.launch == Launch::Absorbed ? "in the row chain above"
                                                     : "host perform()";
    os << "  " << k << ": " << kr.name << " [" << how << "]:";
    for (const NodePtr& n : kr.nodes) os << " " << n->op->str();
    os << "\n";
  }
  for (std::size_t u = 0; u < plan_.update_inplace.size(); ++u)
    os << "  update " << schedule_.buffers[schedule_.update_targets[u]].node->label()
       << (keep_transposed_[schedule_.update_targets[u]]
               ? " written in place, kept transposed between calls\n"
           : plan_.update_inplace[u] ? " written in place\n"
                                     : " copied after the kernels\n");
  return os.str();
}

}  // namespace thea::cpu
