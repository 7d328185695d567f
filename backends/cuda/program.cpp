#include "cuda/program.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "cuda/codegen.hpp"
#include "thea/error.hpp"
#include "thea/memplan.hpp"
#include "thea/op.hpp"
#include "thea/ops/ops.hpp"
#include "thea/ops/slice.hpp"

namespace thea::cuda {

// ---------------------------------------------------------------------------------------
// CudaMirror
// ---------------------------------------------------------------------------------------

CudaMirror::CudaMirror(Runtime& rt, std::size_t nbytes)
    : rt_(rt), buffer_(&rt.allocator(), std::max<std::size_t>(nbytes, 1)) {}

CudaMirror::~CudaMirror() {
  try {
    if (last_event) rt_.destroy_event(last_event);
  } catch (...) {
  }
}

void CudaMirror::download(Tensor& host) {
  // The writer's stream must finish before the copy; then copy on that stream and wait.
  Stream s = last_stream;
  std::size_t n = static_cast<std::size_t>(host.numel()) * dtype_size(host.dtype());
  if (n == 0) return;
  if (!host.is_contiguous()) throw Error("cuda: shared value host buffer is not contiguous");
  rt_.memcpy_d2h(host.raw_data(), buffer_.get(), n, s);
  rt_.synchronize(s);
}

namespace {

using W = ParamWord::Kind;

template <class T>
const T* op_as(const NodePtr& n) {
  return n->kind == NodeKind::Apply ? dynamic_cast<const T*>(n->op.get()) : nullptr;
}

// Timestamps for THEA_PROFILE; a disabled profile costs no clock read.
std::chrono::steady_clock::time_point prof_now(bool on) {
  return on ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
}
std::uint64_t ns_between(std::chrono::steady_clock::time_point a,
                         std::chrono::steady_clock::time_point b) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

bool env_off(const char* name) {
  const char* v = std::getenv(name);
  return v && (std::string(v) == "0" || std::string(v) == "off");
}

// A value's memory at run time: `root` is the value whose storage it lives in, `offset`
// and `strides` are in elements.
struct View {
  int root = -1;
  std::int64_t offset = 0;
  Strides strides;
};

bool is_contiguous(const Shape& shape, const Strides& strides) {
  std::int64_t expect = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[static_cast<std::size_t>(d)] == 1) continue;
    if (strides[static_cast<std::size_t>(d)] != expect) return false;
    expect *= shape[static_cast<std::size_t>(d)];
  }
  return true;
}

std::string runtime_inputs(const Node& n, const std::vector<Shape>& shapes) {
  std::string s;
  for (std::size_t i = 0; i < n.inputs.size(); ++i)
    s += "\n  input " + std::to_string(i) + ": " + n.inputs[i]->describe() + " with shape " +
         shape_str(shapes[i]);
  return s;
}

[[noreturn]] void rethrow_at(const Node& n, const Error& e, const std::vector<Shape>& shapes) {
  const std::string msg = "[" + n.op->str() + "] at " + n.site.str() + " (" + n.label() +
                          "): " + e.what() + runtime_inputs(n, shapes);
  if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(msg);
  if (dynamic_cast<const ValueError*>(&e)) throw ValueError(msg);
  if (dynamic_cast<const TypeError*>(&e)) throw TypeError(msg);
  throw Error(msg);
}

std::int64_t bits_of(const Tensor& t) {
  if (is_float(t.dtype())) {
    double d = t.item<double>();
    std::int64_t b;
    std::memcpy(&b, &d, sizeof b);
    return b;
  }
  return t.item<std::int64_t>();
}

struct StepRt {
  LaunchConfig cfg;
  std::vector<std::int64_t> params;
  bool skip = false;  // nothing to do at this shape (empty, or an aliasing Contig)
  BlasPlan blas;
  MatView a, b, c;  // gemm views (pointers filled for direct calls)
  bool copy_c = false;
  void* kernel = nullptr;
};

// Everything a call resolves on the host before touching the device, kept per distinct
// call key (input shapes and host scalar values): a training loop calls with a few hundred
// minibatch indices, so after the first epoch every call skips shape inference.
struct CallState {
  std::vector<Tensor> host;
  std::vector<Shape> shapes;
  std::vector<View> views;
  std::vector<char> contig_copies;
  std::vector<std::int64_t> args;
  std::vector<void*> mirror_ptrs;
  struct Instance* inst = nullptr;
  // A key called again replays a graph of its own, captured against its own argument block
  // on the device: nothing is uploaded per call. (The tutorial's minibatch index changes the
  // block every call, but each index's block is always the same.)
  DeviceBuffer args_dev;
  std::unique_ptr<Graph> graph;
};

// Graphs held for call keys per program: each costs an instantiation once and some driver
// memory; keys beyond this replay the instance's graph after an argument upload.
constexpr std::size_t kMaxCallGraphs = 1024;

struct KeyHash {
  std::size_t operator()(const std::vector<std::int64_t>& k) const {
    std::size_t h = 1469598103934665603ull;
    for (std::int64_t x : k) h = (h ^ static_cast<std::size_t>(x)) * 1099511628211ull;
    return h;
  }
};

// Outputs of a call without index checks come back lazily (Storage::set_pending) through a
// ring of pinned slots: the call returns without waiting for the device, and a value is
// waited for when first read. A slot's outputs still unread are settled before the slot is
// reused. Calls whose outputs exceed kLazyOutputBytes wait as before (the copy dominates),
// which bounds the ring's pinned memory per function.
struct OutSlot {
  void* pinned = nullptr;
  std::size_t bytes = 0;
  Event event = nullptr;  // recorded after the slot's copies
  std::vector<std::weak_ptr<Storage>> waiting;
};
constexpr std::size_t kOutSlots = 16;
constexpr std::size_t kLazyOutputBytes = 256 * 1024;

// Offsets in an instance's arena keep cudaMalloc's alignment, which cuBLAS and vector loads
// expect of every buffer.
constexpr std::int64_t kDeviceAlign = 256;

struct Instance {
  // Inputs, kernel outputs (unless written in place) and copies, in one allocation laid out
  // by the shared memory plan's arena layout: values whose lifetimes do not overlap share
  // bytes. offset: per value, its byte offset in the arena, or -1.
  DeviceBuffer arena;
  std::vector<std::int64_t> offset;
  std::map<std::size_t, DeviceBuffer> scratch;  // step -> block partials + counter (row totals)
  std::vector<StepRt> steps;
  std::vector<void*> mirror_ptrs;  // shared buffers the parameters point into
  std::unique_ptr<Graph> graph;
  bool capturable = true;
  std::size_t calls = 0;
  std::int64_t arena_bytes = 0;     // the arena's size
  std::int64_t unshared_bytes = 0;  // what one buffer per value would take
};

}  // namespace

struct CudaProgram::Impl {
  Runtime& rt;
  const Plan& plan;
  std::shared_ptr<Module> module;
  Stream stream = nullptr;
  // Pinned staging for the argument block, a ring so the host never overwrites a block
  // whose copy has not run yet.
  std::vector<void*> ring;
  std::vector<Event> ring_events;
  std::size_t ring_next = 0;
  DeviceBuffer args_dev;
  DeviceBuffer err_dev;
  std::vector<std::int64_t> args_host, args_uploaded;
  bool args_valid = false;
  std::map<int, DeviceBuffer> constants;
  std::map<std::vector<std::int64_t>, std::unique_ptr<Instance>> instances;
  std::unordered_map<std::vector<std::int64_t>, CallState, KeyHash> memo;
  bool memo_enabled = true;
  std::size_t call_graphs = 0;  // memo entries holding a graph
  bool call_graphs_enabled = true;
  std::vector<NodePtr> keep_alive;  // shared nodes whose mirrors instances point into
  bool graphs = true;
  bool has_host_steps = false;
  std::vector<std::size_t> shared_values;  // indices of the Shared values
  // Per-call scratch kept across calls so a replayed step allocates nothing.
  std::vector<void*> call_mirror_ptrs;
  std::vector<std::int64_t> call_key;
  void* out_pinned = nullptr;  // staging for outputs and the error flag (grows, never shrinks)
  std::size_t out_pinned_bytes = 0;
  bool lazy_outputs = true;
  std::vector<OutSlot> out_slots;  // lazy outputs' ring, made on first use
  std::size_t out_next = 0;
  // THEA_PROFILE=1: host time per call phase (prepare, upload, launch, outputs+sync),
  // reported on stderr when the program is destroyed.
  bool profile = false;
  std::array<std::uint64_t, 4> prof_ns{};
  std::size_t prof_calls = 0;

  // Per-call state.
  std::vector<Tensor> host;
  std::vector<Shape> shapes;
  std::vector<View> views;
  std::vector<char> contig_copies;   // Contig value copies (1) or aliases (0) this call
  std::vector<CudaMirror*> mirrors;  // per value (Shared only)

  Impl(Runtime& r, const Plan& p) : rt(r), plan(p) {}

  const Value& val(int i) const { return plan.values[static_cast<std::size_t>(i)]; }
  Dtype dtype(int i) const { return val(i).node->type.dtype; }

  std::int64_t numel(int v) const { return shape_numel(shapes[static_cast<std::size_t>(v)]); }
  std::size_t nbytes(int v) const {
    return static_cast<std::size_t>(numel(v)) * dtype_size(dtype(v));
  }

  void evaluate_host_and_shapes(const std::vector<Tensor>& inputs);
  void resolve_views();
  std::vector<std::int64_t> signature() const;
  std::vector<sched::ArenaItem> device_lifetimes() const;
  std::unique_ptr<Instance> build_instance();
  char* pointer(const Instance& inst, int v) const;
  char* root_pointer(const Instance& inst, int root) const;
  void fill_params(Instance& inst, std::size_t k);
  void block_partials(Instance& inst, std::size_t k, std::size_t parts_bytes, int word);
  void fill_args(const Instance& inst);
  void prepare_mirrors();
  void enqueue(Instance& inst, const std::int64_t* args);
  // The steps captured as a graph reading `args`; nullptr when capture is unavailable.
  std::unique_ptr<Graph> capture(Instance& inst, const std::int64_t* args);
  void capture_call_graph(Instance& inst, CallState& cs);
  void clear_memo();
  void run_host_op(Instance& inst, const Step& st);
  // fn(k, value, offset, bytes) for each output computed on the device, with its place in a
  // staging block whose first output starts at `first`: 16-byte aligned, in output order.
  template <class Fn>
  void for_each_device_output(std::size_t first, Fn&& fn) const {
    std::size_t off = first;
    for (std::size_t k = 0; k < plan.outputs.size(); ++k) {
      const int o = plan.outputs[k];
      if (val(o).place == Place::Host) continue;
      const std::size_t n = nbytes(o);
      fn(k, o, off, n);
      off += (n + 15) / 16 * 16;
    }
  }
  std::size_t output_staging_bytes() const;
  // Copy the outputs back (output_bytes: output_staging_bytes()) into `results`.
  void stage_outputs_lazily(const Instance& inst, std::size_t output_bytes,
                            std::vector<Tensor>& results);
  void stage_outputs_waiting(const Instance& inst, std::size_t output_bytes,
                             std::vector<Tensor>& results);
};

// ---------------------------------------------------------------------------------------
// Per call: host values and shapes
// ---------------------------------------------------------------------------------------

void CudaProgram::Impl::evaluate_host_and_shapes(const std::vector<Tensor>& inputs) {
  const std::size_t nv = plan.values.size();
  host.assign(nv, Tensor());
  shapes.assign(nv, Shape());
  for (std::size_t k = 0; k < plan.inputs.size(); ++k) {
    int v = plan.inputs[k];
    if (v < 0) continue;
    host[static_cast<std::size_t>(v)] = inputs[k];
    shapes[static_cast<std::size_t>(v)] = inputs[k].shape();
  }
  for (std::size_t i = 0; i < nv; ++i) {
    const Value& v = plan.values[i];
    const Node& n = *v.node;
    if (v.place == Place::Contig) {
      shapes[i] = shapes[static_cast<std::size_t>(v.src)];
      continue;
    }
    switch (n.kind) {
      case NodeKind::Input:
        break;  // set above
      case NodeKind::Constant:
        shapes[i] = n.value.shape();
        if (v.place == Place::Host) host[i] = n.value;
        break;
      case NodeKind::Shared:
        shapes[i] = n.shared->value.shape();
        break;
      case NodeKind::Apply: {
        std::vector<Shape> in_shapes;
        std::vector<const Tensor*> in_values;
        for (const NodePtr& in : n.inputs) {
          int j = plan.index.at(in.get());
          in_shapes.push_back(shapes[static_cast<std::size_t>(j)]);
          in_values.push_back(host[static_cast<std::size_t>(j)].defined()
                                  ? &host[static_cast<std::size_t>(j)]
                                  : nullptr);
        }
        try {
          if (const auto* so = op_as<SizeOf>(v.node)) {
            // Only the input's shape matters, and the input may live on the device.
            std::int64_t count = 1;
            const Shape& s = in_shapes[0];
            for (int d = 0; d < static_cast<int>(s.size()); ++d)
              if (so->axes().empty() ||
                  std::find(so->axes().begin(), so->axes().end(), d) != so->axes().end())
                count *= s[static_cast<std::size_t>(d)];
            host[i] = Tensor::from_vector<std::int64_t>({count}, {});
            shapes[i] = {};
          } else if (v.place == Place::Host) {
            std::vector<Tensor> vals;
            for (std::size_t k = 0; k < in_values.size(); ++k)
              vals.push_back(in_values[k] ? *in_values[k]
                                          : Tensor::empty(in_shapes[k], n.inputs[k]->type.dtype));
            host[i] = n.op->perform(vals);
            shapes[i] = host[i].shape();
          } else {
            shapes[i] = n.op->infer_shape(in_shapes, in_values);
          }
        } catch (const Error& e) {
          rethrow_at(n, e, in_shapes);
        }
        // The checks the reference backend makes at run time.
        if (n.op->traits().elementwise) {
          const Shape& out = shapes[i];
          for (std::size_t k = 0; k < n.inputs.size(); ++k) {
            const Shape& s = in_shapes[k];
            const int off = static_cast<int>(out.size()) - static_cast<int>(s.size());
            for (int d = 0; d < static_cast<int>(s.size()); ++d)
              if (s[static_cast<std::size_t>(d)] == 1 &&
                  out[static_cast<std::size_t>(off + d)] != 1 &&
                  n.inputs[k]->type.shape[static_cast<std::size_t>(d)] != 1)
                throw ShapeError("[" + n.op->str() + "] at " + n.site.str() + ": dimension " +
                                 std::to_string(d) + " of " + n.inputs[k]->describe() +
                                 " has size 1 at run time but is not broadcastable in its type, "
                                 "while the result has size " +
                                 std::to_string(out[static_cast<std::size_t>(off + d)]) +
                                 "; declare the size-1 dimension statically (tensor(dtype, {1, "
                                 "-1})) or insert it with dimshuffle" +
                                 runtime_inputs(n, in_shapes));
          }
        }
        if (const auto* r = op_as<Reduce>(v.node);
            r && (r->kind() == ReduceKind::Max || r->kind() == ReduceKind::Min)) {
          const Shape& s = in_shapes[0];
          std::int64_t len = 1;
          for (int d = 0; d < static_cast<int>(s.size()); ++d)
            if (r->axes().empty() ||
                std::find(r->axes().begin(), r->axes().end(), d) != r->axes().end())
              len *= s[static_cast<std::size_t>(d)];
          if (len == 0 && shape_numel(shapes[i]) > 0)
            throw ValueError("[" + n.op->str() + "] at " + n.site.str() +
                             ": zero-size reduction has no identity" +
                             runtime_inputs(n, in_shapes));
        }
        if (const auto* a = op_as<ArgReduce>(v.node)) {
          const Shape& s = in_shapes[0];
          std::int64_t len =
              a->axis() < 0 ? shape_numel(s) : s[static_cast<std::size_t>(a->axis())];
          if (len == 0 && shape_numel(shapes[i]) > 0)
            throw ValueError("[" + n.op->str() + "] at " + n.site.str() + ": attempt to get " +
                             a->name() + " of an empty sequence" + runtime_inputs(n, in_shapes));
        }
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Per call: views (root, offset, strides) and Contig decisions
// ---------------------------------------------------------------------------------------

void CudaProgram::Impl::resolve_views() {
  const std::size_t nv = plan.values.size();
  views.assign(nv, View());
  contig_copies.assign(nv, 0);
  // A view's source may be a later value (a reshape reads a Contig appended at the end).
  std::vector<char> done(nv, 0);
  std::function<void(std::size_t)> resolve = [&](std::size_t i) {
    if (done[i]) return;
    done[i] = 1;
    const Value& v = plan.values[i];
    if ((v.place == Place::View || v.place == Place::Contig) && v.src >= 0)
      resolve(static_cast<std::size_t>(v.src));
    const Shape& shape = shapes[i];
    View& out = views[i];
    switch (v.place) {
      case Place::Host:
      case Place::Inline:
        break;
      case Place::Input:
      case Place::Shared:
      case Place::Constant:
      case Place::Buffer:
        out.root = static_cast<int>(i);
        out.strides = contiguous_strides(shape);
        break;
      case Place::Contig: {
        const View& src = views[static_cast<std::size_t>(v.src)];
        if (src.root < 0) break;  // as for views: nothing stores the value
        bool alias;
        if (v.force_copy) {
          alias = false;
        } else if (v.blas_alias) {
          // cuBLAS takes any layout with one unit stride (transposes included).
          const Shape& s = shapes[static_cast<std::size_t>(v.src)];
          if (s.size() == 2) {
            MatView m{nullptr, s[0], s[1], src.strides[0], src.strides[1]};
            alias = blas_compatible(m);
          } else if (s.size() == 1) {
            alias = s[0] <= 1 || src.strides[0] >= 1;
          } else {
            alias = is_contiguous(shape, src.strides);
          }
        } else {
          alias = is_contiguous(shape, src.strides);
        }
        contig_copies[i] = alias ? 0 : 1;
        if (alias) {
          out = src;
        } else {
          out.root = static_cast<int>(i);
          out.strides = contiguous_strides(shape);
        }
        break;
      }
      case Place::View: {
        const View& src = views[static_cast<std::size_t>(v.src)];
        // A view of a value computed inside a kernel and never stored: only that kernel's
        // expression reads it (schedule lowering), so it has no memory either.
        if (src.root < 0) break;
        const Node& n = *v.node;
        out.root = src.root;
        out.offset = src.offset;
        if (const auto* ds = op_as<DimShuffle>(v.node)) {
          out.strides.assign(shape.size(), 0);
          for (std::size_t k = 0; k < ds->pattern().size(); ++k)
            if (ds->pattern()[k] != -1)
              out.strides[k] = src.strides[static_cast<std::size_t>(ds->pattern()[k])];
        } else if (op_as<Reshape>(v.node)) {
          out.strides = contiguous_strides(shape);  // src is a contiguous Contig value
        } else if (const auto* cg = op_as<ConcatenateGrad>(v.node)) {
          std::int64_t before = 0;
          for (int k = 0; k < cg->index(); ++k) {
            int xk = plan.index.at(n.inputs[static_cast<std::size_t>(1 + k)].get());
            before += shapes[static_cast<std::size_t>(xk)][static_cast<std::size_t>(cg->axis())];
          }
          out.strides = src.strides;
          if (shape_numel(shape) > 0)
            out.offset += before * src.strides[static_cast<std::size_t>(cg->axis())];
        } else if (const auto* st = op_as<Subtensor>(v.node)) {
          const Shape& in_shape = shapes[static_cast<std::size_t>(v.src)];
          auto value = [&](const IndexSpec::Bound& b) -> std::optional<std::int64_t> {
            switch (b.kind) {
              case IndexSpec::Bound::Kind::None:
                return std::nullopt;
              case IndexSpec::Bound::Kind::Const:
                return b.value;
              case IndexSpec::Bound::Kind::Input: {
                int j = plan.index.at(n.inputs[static_cast<std::size_t>(b.input)].get());
                return host[static_cast<std::size_t>(j)].item<std::int64_t>();
              }
            }
            return std::nullopt;
          };
          std::int64_t off = 0;
          Strides strides;
          for (std::size_t axis = 0; axis < in_shape.size(); ++axis) {
            const std::int64_t dim = in_shape[axis];
            if (axis >= st->index().size()) {
              strides.push_back(src.strides[axis]);
              continue;
            }
            const IndexSpec& e = st->index()[axis];
            if (e.kind == IndexSpec::Kind::Index) {
              std::int64_t idx = value(e.start).value_or(0);
              std::int64_t j = idx < 0 ? idx + dim : idx;
              if (j < 0 || j >= dim)
                throw ValueError("[" + n.op->str() + "] at " + n.site.str() + ": index " +
                                 std::to_string(idx) + " is out of bounds for axis " +
                                 std::to_string(axis) + " with size " + std::to_string(dim));
              off += j * src.strides[axis];
              continue;
            }
            SliceRange r = resolve_slice(value(e.start), value(e.stop), value(e.step), dim);
            if (r.length > 0) off += r.start * src.strides[axis];
            strides.push_back(src.strides[axis] * r.step);
          }
          out.strides = strides;
          if (shape_numel(shape) > 0) out.offset += off;
        } else {
          throw Error("cuda: no view rule for " + n.describe());
        }
        break;
      }
    }
  };
  for (std::size_t i = 0; i < nv; ++i) resolve(i);
}

std::vector<std::int64_t> CudaProgram::Impl::signature() const {
  std::vector<std::int64_t> sig;
  for (std::size_t i = 0; i < plan.values.size(); ++i) {
    sig.push_back(static_cast<std::int64_t>(shapes[i].size()));
    for (auto d : shapes[i]) sig.push_back(d);
    const Value& v = plan.values[i];
    if (v.place == Place::View || v.place == Place::Contig) {
      for (auto s : views[i].strides) sig.push_back(s);
      sig.push_back(contig_copies[i]);
      // Static offsets are baked into parameters; dynamic ones travel in the args block.
      if (!v.dynamic) sig.push_back(views[i].offset);
    }
  }
  return sig;
}

// ---------------------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------------------

char* CudaProgram::Impl::root_pointer(const Instance& inst, int root) const {
  const Value& v = val(root);
  if (v.place == Place::Shared)
    return static_cast<char*>(mirrors[static_cast<std::size_t>(root)]->data());
  if (v.place == Place::Constant) return static_cast<char*>(constants.at(root).get());
  // In-place update values live in their shared variable's buffer.
  if (v.update_of >= 0) {
    for (const Step& st : plan.steps)
      if (st.out == root && st.target >= 0)
        return static_cast<char*>(mirrors[static_cast<std::size_t>(st.target)]->data());
  }
  const std::int64_t at = inst.offset[static_cast<std::size_t>(root)];
  return at < 0 ? nullptr : static_cast<char*>(inst.arena.get()) + at;
}

char* CudaProgram::Impl::pointer(const Instance& inst, int v) const {
  const View& vw = views[static_cast<std::size_t>(v)];
  if (vw.root < 0) return nullptr;
  char* base = root_pointer(inst, vw.root);
  if (!base) return nullptr;
  return base + vw.offset * static_cast<std::int64_t>(dtype_size(dtype(v)));
}

std::vector<sched::ArenaItem> CudaProgram::Impl::device_lifetimes() const {
  const std::size_t nv = plan.values.size();
  const int nsteps = static_cast<int>(plan.steps.size());
  std::vector<sched::ArenaItem> items(nv);
  std::set<int> inplace_outs;  // live in their shared variable's buffer
  for (const Step& st : plan.steps)
    if (st.target >= 0 && st.kind != StepKind::UpdateCopy) inplace_outs.insert(st.out);
  for (std::size_t i = 0; i < nv; ++i) {
    const Value& v = plan.values[i];
    const bool own = v.place == Place::Input ||
                     (v.place == Place::Buffer && !inplace_outs.count(static_cast<int>(i))) ||
                     (v.place == Place::Contig && contig_copies[i]);
    if (!own) continue;
    items[i].nbytes = static_cast<std::int64_t>(nbytes(static_cast<int>(i)));
    items[i].first = nsteps;  // widened below by every use
    items[i].last = -1;
  }
  // A use of any value extends the lifetime of the storage it lives in (views included).
  auto use = [&](int v, int step) {
    if (v < 0) return;
    const int root = views[static_cast<std::size_t>(v)].root;
    if (root < 0 || items[static_cast<std::size_t>(root)].nbytes < 0) return;
    sched::ArenaItem& it = items[static_cast<std::size_t>(root)];
    it.first = std::min(it.first, step);
    it.last = std::max(it.last, step);
  };
  for (int k = 0; k < nsteps; ++k) {
    const Step& st = plan.steps[static_cast<std::size_t>(k)];
    for (int v : {st.out, st.target, st.gemm_a, st.gemm_b, st.gemm_c, st.alpha_value, st.beta_value,
                  st.space, st.prologue, st.total})
      use(v, k);
    for (const Operand& o : st.operands) use(o.value, k);
    for (const ParamWord& w : st.params) use(w.value, k);
  }
  for (int v : plan.inputs) use(v, -1);       // uploaded before the first step
  for (int v : plan.outputs) use(v, nsteps);  // downloaded after the last
  for (std::size_t i = 0; i < nv; ++i) {
    // Pointers read from the argument block (per-call offsets): live for the whole call.
    if (plan.values[i].dynamic) {
      use(static_cast<int>(i), -1);
      use(static_cast<int>(i), nsteps);
    }
  }
  for (sched::ArenaItem& it : items)
    if (it.nbytes >= 0 && it.first > it.last) {  // never used by a step: keep it apart
      it.first = -1;
      it.last = nsteps;
    }
  return items;
}

std::unique_ptr<Instance> CudaProgram::Impl::build_instance() {
  auto inst = std::make_unique<Instance>();
  const std::vector<sched::ArenaItem> items = device_lifetimes();
  const sched::ArenaLayout layout = sched::layout_lifetimes(items, kDeviceAlign);
  inst->offset = layout.offset;
  if (layout.size > 0)
    inst->arena = DeviceBuffer(&rt.allocator(), static_cast<std::size_t>(layout.size));
  inst->arena_bytes = layout.size;
  for (const sched::ArenaItem& it : items)
    if (it.nbytes >= 0)
      inst->unshared_bytes += (it.nbytes + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign;
  for (std::size_t i = 0; i < plan.values.size(); ++i)
    if (mirrors[i]) inst->mirror_ptrs.push_back(mirrors[i]->data());
  inst->steps.resize(plan.steps.size());
  for (std::size_t k = 0; k < plan.steps.size(); ++k) {
    const Step& st = plan.steps[k];
    if (st.kind == StepKind::HostOp) inst->capturable = false;
    if (st.kind == StepKind::UpdateCopy && val(st.operands[0].value).place == Place::Host)
      inst->capturable = false;
    fill_params(*inst, k);
  }
  return inst;
}

// Device scratch for step k's per-block partials (parts_bytes) and the block counter after
// them; params[word] / [word + 1] get their addresses. The counter starts at 0 and the
// last block of every launch sets it back to 0.
void CudaProgram::Impl::block_partials(Instance& inst, std::size_t k, std::size_t parts_bytes,
                                       int word) {
  auto it = inst.scratch.find(k);
  if (it == inst.scratch.end())
    it = inst.scratch.emplace(k, DeviceBuffer(&rt.allocator(), parts_bytes + 16)).first;
  char* base = static_cast<char*>(it->second.get());
  rt.memset_d(base + parts_bytes, 0, 16, stream);
  std::vector<std::int64_t>& params = inst.steps[k].params;
  params[static_cast<std::size_t>(word)] = reinterpret_cast<std::int64_t>(base);
  params[static_cast<std::size_t>(word) + 1] = reinterpret_cast<std::int64_t>(base + parts_bytes);
}

void CudaProgram::Impl::fill_params(Instance& inst, std::size_t k) {
  const Step& st = plan.steps[k];
  StepRt& sr = inst.steps[k];
  const DeviceInfo& dev = rt.info();
  if (!st.kernel.empty()) sr.kernel = module->kernel(st.kernel);
  sr.params.clear();
  for (const ParamWord& w : st.params) {
    std::int64_t x = 0;
    const std::size_t v = static_cast<std::size_t>(w.value);
    switch (w.kind) {
      case W::Const:
        x = w.c;
        break;
      case W::Numel:
        x = shape_numel(shapes[v]);
        break;
      case W::Dim:
        x = shapes[v][static_cast<std::size_t>(w.axis)];
        break;
      case W::Stride:
        x = views[v].strides[static_cast<std::size_t>(w.axis)];
        break;
      case W::SpaceStride: {
        const Shape& s = shapes[v];
        int off = w.rank - static_cast<int>(s.size());
        int d = w.axis - off;
        x = (d < 0 || s[static_cast<std::size_t>(d)] == 1)
                ? 0
                : views[v].strides[static_cast<std::size_t>(d)];
        break;
      }
      case W::Prod: {
        x = 1;
        for (int a : w.axes) x *= shapes[v][static_cast<std::size_t>(a)];
        break;
      }
      case W::Ptr:
        x = reinterpret_cast<std::int64_t>(pointer(inst, w.value));
        break;
      case W::ErrWord:
        x = reinterpret_cast<std::int64_t>(err_dev.get());
        break;
    }
    sr.params.push_back(x);
  }
  if (sr.params.empty()) sr.params.push_back(0);
  switch (st.kind) {
    case StepKind::Map: {
      std::int64_t n = numel(st.out);
      sr.skip = n == 0;
      sr.cfg = elementwise_config(n, dev);
      break;
    }
    case StepKind::Copy: {
      sr.skip = !contig_copies[static_cast<std::size_t>(st.out)] || numel(st.out) == 0;
      sr.cfg = elementwise_config(numel(st.out), dev);
      break;
    }
    case StepKind::Reduce:
    case StepKind::ArgReduce:
    case StepKind::Softmax: {
      int space = plan.index.at(st.node->inputs[0].get());
      const Shape& s = shapes[static_cast<std::size_t>(space)];
      std::int64_t rows = 1, len = 1;
      std::vector<int> red;
      if (const auto* r = op_as<Reduce>(st.node)) {
        red = r->axes();
      } else if (const auto* a = op_as<ArgReduce>(st.node)) {
        if (a->axis() >= 0) red = {a->axis()};
      } else {
        red = {static_cast<int>(s.size()) - 1};
      }
      for (int d = 0; d < static_cast<int>(s.size()); ++d) {
        bool r = red.empty() || std::find(red.begin(), red.end(), d) != red.end();
        (r ? len : rows) *= s[static_cast<std::size_t>(d)];
      }
      sr.skip = rows == 0;
      sr.cfg = reduction_config(rows, len, st.contiguous_rows, dev, 8, true);
      break;
    }
    case StepKind::Xent: {
      std::int64_t rows = shapes[static_cast<std::size_t>(st.out)][0];
      sr.skip = rows == 0;
      sr.cfg = elementwise_config(rows, dev);
      break;
    }
    case StepKind::SoftmaxGrad:
    case StepKind::XentSoftmax: {
      const Shape& s = shapes[static_cast<std::size_t>(
          st.operands[st.kind == StepKind::SoftmaxGrad ? 1 : 0].value)];
      std::int64_t len = s.empty() ? 1 : s.back();
      std::int64_t rows = s.size() == 2 ? s[0] : 1;
      sr.skip = rows == 0;
      sr.cfg = reduction_config(rows, len, true, dev, 8, true);
      break;
    }
    case StepKind::RowGroup: {
      const Shape& s = shapes[static_cast<std::size_t>(st.space)];
      const std::int64_t rows = s[0], len = s[1];
      sr.skip = rows == 0;
      if (st.prologue >= 0) {
        const std::int64_t reduction = shapes[static_cast<std::size_t>(st.gemm_a)][1];
        sr.cfg = row_group_gemm_config(rows, len, reduction, dev,
                                       static_cast<int>(dtype_size(dtype(st.prologue))));
      } else {
        sr.cfg = reduction_config(rows, len, true, dev, 8, true);
      }
      if (st.total >= 0) {
        // The total is written even with no rows (a mean of nothing is NaN, as numpy's).
        sr.skip = false;
        add_row_total(sr.cfg, dev);
        block_partials(inst, k, std::size_t{sr.cfg.grid_x} * 8, st.total_words);
      }
      break;
    }
    case StepKind::Loop: {
      const sched::LoopKernel& lk = *st.loop;
      std::int64_t n_outer = 1, n_inner = 1;
      bool has_inner = false, last_inner = false;
      for (std::size_t d = 0; d < lk.domain.size(); ++d) {
        const sched::Dim& dim = lk.domain[d];
        std::int64_t size = dim.size;
        if (!dim.is_static()) {
          const auto& [v, axis] = st.loop_syms[static_cast<std::size_t>(dim.sym)];
          size = shapes[static_cast<std::size_t>(v)][static_cast<std::size_t>(axis)];
        }
        (lk.inner[d] ? n_inner : n_outer) *= size;
        has_inner = has_inner || lk.inner[d];
        last_inner = lk.inner[d];
      }
      if (st.prologue >= 0) {
        const std::int64_t reduction = shapes[static_cast<std::size_t>(st.gemm_a)][1];
        sr.cfg = row_group_gemm_config(n_outer, n_inner, reduction, dev,
                                       static_cast<int>(dtype_size(dtype(st.prologue))));
      } else if (has_inner) {
        sr.cfg = reduction_config(n_outer, n_inner, last_inner, dev, 8, true);
      } else {
        sr.cfg = elementwise_config(n_outer, dev);
      }
      // Values computed once per launch (after the loop, or loop-invariant) are stored even
      // when the kernel has no points.
      bool once_per_launch = false;
      for (const sched::Store& store : lk.stores) {
        const int level = lk.exprs[static_cast<std::size_t>(store.expr)].level;
        once_per_launch = once_per_launch || level == 0 || level == 3;
      }
      sr.skip = n_outer == 0 && !once_per_launch;
      if (st.loop_scratch_words >= 0) {
        // Final reductions: written even over nothing (a mean of nothing is NaN, as numpy's).
        sr.skip = false;
        add_row_total(sr.cfg, dev);
        // The block's partials: one 8-byte slot per thread, after the product's tiles.
        const unsigned threads = sr.cfg.block_x * sr.cfg.block_y;
        sr.cfg.shared_bytes = st.prologue >= 0
                                  ? (sr.cfg.shared_bytes + 15u) / 16u * 16u + threads * 8u
                                  : std::max(sr.cfg.shared_bytes, threads * 8u);
        std::size_t nfinal = 0;
        for (const sched::Expr& e : lk.exprs)
          nfinal += e.kind == sched::ExprKind::Reduce && e.final;
        block_partials(inst, k, std::size_t{sr.cfg.grid_x} * nfinal * 8, st.loop_scratch_words);
      }
      break;
    }
    case StepKind::XentSoftmaxDx:
    case StepKind::XentGrad:
    case StepKind::OneHot:
    case StepKind::DotNaive: {
      std::int64_t n = numel(st.out);
      sr.skip = n == 0;
      sr.cfg = elementwise_config(n, dev);
      break;
    }
    case StepKind::Take:
    case StepKind::IncRows: {
      // One thread per (index, row element); one per index when rows are empty, so that
      // bad indices are still reported.
      const Shape& xs = shapes[static_cast<std::size_t>(st.operands[0].value)];
      std::int64_t row_len = 1;
      for (std::size_t d = 1; d < xs.size(); ++d) row_len *= xs[d];
      const std::int64_t n = shapes[static_cast<std::size_t>(st.operands[1].value)][0] *
                             std::max<std::int64_t>(row_len, 1);
      sr.skip = n == 0;
      sr.cfg = elementwise_config(n, dev);
      break;
    }
    case StepKind::Gemm: {
      if (st.skinny) {
        // op(A) is (m, k): A's axes swap when it is read transposed.
        const std::size_t a = static_cast<std::size_t>(st.gemm_a);
        const std::size_t row = st.trans_a ? 1 : 0, red = 1 - row;
        const std::int64_t m = shapes[static_cast<std::size_t>(st.out)][0];
        const std::int64_t n = shapes[static_cast<std::size_t>(st.out)][1];
        const std::int64_t reduction = shapes[a][red];
        const SkinnyGemmLaunch l =
            skinny_gemm_config(m, reduction, n, views[a].strides[row], views[a].strides[red], dev,
                               static_cast<int>(dtype_size(dtype(st.out))));
        sr.cfg = l.cfg;
        sr.params[static_cast<std::size_t>(st.skinny_mode_word)] = l.mode;
        sr.skip = m == 0 || n == 0;
        break;
      }
      auto mat = [&](int v, bool as_b, bool trans) {
        const Shape& s = shapes[static_cast<std::size_t>(v)];
        const Strides& t = views[static_cast<std::size_t>(v)].strides;
        MatView m;
        m.ptr = pointer(inst, v);
        if (s.size() == 2) {
          m.rows = s[trans ? 1 : 0];
          m.cols = s[trans ? 0 : 1];
          m.row_stride = t[trans ? 1 : 0];
          m.col_stride = t[trans ? 0 : 1];
        } else if (as_b) {  // vector b: (k, 1)
          m.rows = s[0];
          m.cols = 1;
          m.row_stride = t[0];
          m.col_stride = 1;
        } else {  // vector a: (1, k)
          m.rows = 1;
          m.cols = s[0];
          m.row_stride = s[0] * std::max<std::int64_t>(t[0], 1);
          m.col_stride = t[0];
        }
        return m;
      };
      sr.a = mat(st.gemm_a, false, st.trans_a);
      sr.b = mat(st.gemm_b, true, st.trans_b);
      const int out = st.out;
      const Shape& os = shapes[static_cast<std::size_t>(out)];
      sr.c.rows = sr.a.rows;
      sr.c.cols = sr.b.cols;
      sr.c.row_stride = sr.b.cols;
      sr.c.col_stride = 1;
      sr.c.ptr = st.target >= 0 ? mirrors[static_cast<std::size_t>(st.target)]->data()
                                : pointer(inst, out);
      (void)os;
      sr.blas = plan_gemm(sr.a, sr.b, sr.c);
      if (!sr.blas.ok)
        throw Error("cuda: internal error: gemm operands of " + st.node->describe() +
                    " are not in a cuBLAS layout after copying");
      sr.copy_c = st.gemm_c >= 0 && pointer(inst, st.gemm_c) != sr.c.ptr;
      sr.skip = sr.c.rows == 0 || sr.c.cols == 0;
      break;
    }
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------
// Per call: argument block, mirrors, execution
// ---------------------------------------------------------------------------------------

void CudaProgram::Impl::fill_args(const Instance& inst) {
  args_host.assign(static_cast<std::size_t>(std::max(plan.n_args, 1)), 0);
  for (std::size_t i = 0; i < plan.values.size(); ++i) {
    const Value& v = plan.values[i];
    if (v.scalar_slot >= 0) args_host[static_cast<std::size_t>(v.scalar_slot)] = bits_of(host[i]);
    if (v.ptr_slot >= 0)
      args_host[static_cast<std::size_t>(v.ptr_slot)] =
          reinterpret_cast<std::int64_t>(pointer(inst, static_cast<int>(i)));
  }
  for (std::size_t k = 0; k < plan.steps.size(); ++k) {
    const Step& st = plan.steps[k];
    if (st.kind != StepKind::Gemm) continue;
    const StepRt& sr = inst.steps[k];
    auto scaled = [&](double c, int scale) {
      return scale >= 0 ? c * host[static_cast<std::size_t>(scale)].item<double>() : c;
    };
    auto put = [&](int slot, double x) {
      std::int64_t bits = 0;
      if (dtype(st.out) == Dtype::Float32) {
        float f = static_cast<float>(x);
        std::memcpy(&bits, &f, sizeof f);
      } else {
        std::memcpy(&bits, &x, sizeof x);
      }
      args_host[static_cast<std::size_t>(slot)] = bits;
    };
    if (st.alpha_slot >= 0) put(st.alpha_slot, scaled(st.alpha, st.alpha_scale));
    if (st.beta_slot >= 0) put(st.beta_slot, st.gemm_c >= 0 ? scaled(st.beta, st.beta_scale) : 0.0);
    if (st.indirect) {
      args_host[static_cast<std::size_t>(st.ptr_slots)] =
          reinterpret_cast<std::int64_t>(pointer(inst, st.gemm_a));
      args_host[static_cast<std::size_t>(st.ptr_slots + 1)] =
          reinterpret_cast<std::int64_t>(pointer(inst, st.gemm_b));
      args_host[static_cast<std::size_t>(st.ptr_slots + 2)] =
          reinterpret_cast<std::int64_t>(sr.c.ptr);
    }
  }
}

void CudaProgram::Impl::prepare_mirrors() {
  mirrors.assign(plan.values.size(), nullptr);
  for (std::size_t i : shared_values) {
    const Value& v = plan.values[i];
    SharedState& s = *v.node->shared;
    auto* m = dynamic_cast<CudaMirror*>(s.mirror.get());
    if (!m || &m->runtime() != &rt) {
      // Another backend (or runtime) holds the newest value: bring it home first.
      if (!s.host_valid && s.mirror) {
        s.mirror->download(s.value);
        s.host_valid = true;
      }
      auto fresh = std::make_shared<CudaMirror>(
          rt, static_cast<std::size_t>(s.value.numel()) * dtype_size(s.value.dtype()));
      m = fresh.get();
      s.mirror = fresh;
    }
    if (!m->device_valid()) {
      if (!s.host_valid)
        throw Error("cuda: shared variable " + v.node->describe() + " has no valid copy anywhere");
      std::size_t n = static_cast<std::size_t>(s.value.numel()) * dtype_size(s.value.dtype());
      if (n) rt.memcpy_h2d(m->data(), s.value.contiguous().raw_data(), n, stream);
      m->set_device_valid();
    }
    if (m->last_stream && m->last_stream != stream) {
      // The writer's stream records its event only now that another stream needs it: an
      // event recorded later still orders after every use enqueued there before.
      if (m->event_stale) {
        if (!m->last_event) m->last_event = rt.create_event();
        rt.record_event(m->last_event, m->last_stream);
        m->event_stale = false;
      }
      rt.wait_event(stream, m->last_event);
    }
    mirrors[i] = m;
  }
}

void CudaProgram::Impl::run_host_op(Instance& inst, const Step& st) {
  rt.synchronize(stream);
  const Node& n = *st.node;
  std::vector<Tensor> ins;
  for (const NodePtr& in : n.inputs) {
    int j = plan.index.at(in.get());
    if (host[static_cast<std::size_t>(j)].defined()) {
      ins.push_back(host[static_cast<std::size_t>(j)]);
      continue;
    }
    // Download the whole root storage, then view into it as the device does.
    const View& vw = views[static_cast<std::size_t>(j)];
    int root = vw.root;
    std::size_t root_bytes = nbytes(root);
    if (val(root).place == Place::Shared) {
      const Tensor& sv = val(root).node->shared->value;
      root_bytes = static_cast<std::size_t>(sv.numel()) * dtype_size(sv.dtype());
    }
    auto storage = std::make_shared<Storage>(std::max<std::size_t>(root_bytes, 1));
    if (root_bytes) rt.memcpy_d2h(storage->data(), root_pointer(inst, root), root_bytes, stream);
    rt.synchronize(stream);
    ins.emplace_back(storage, vw.offset, shapes[static_cast<std::size_t>(j)], vw.strides, dtype(j));
  }
  Tensor out;
  try {
    out = n.op->perform(ins);
  } catch (const Error& e) {
    std::vector<Shape> s;
    for (const Tensor& t : ins) s.push_back(t.shape());
    rethrow_at(n, e, s);
  }
  Tensor c = out.contiguous();
  std::size_t bytes = static_cast<std::size_t>(c.numel()) * dtype_size(c.dtype());
  if (c.dtype() != dtype(st.out) || c.shape() != shapes[static_cast<std::size_t>(st.out)])
    throw Error("[" + n.op->str() + "] at " + n.site.str() + ": produced " + c.describe() +
                " but the cuda backend expected " +
                shape_str(shapes[static_cast<std::size_t>(st.out)]));
  if (bytes) rt.memcpy_h2d(pointer(inst, st.out), c.raw_data(), bytes, stream);
}

void CudaProgram::Impl::enqueue(Instance& inst, const std::int64_t* args) {
  for (std::size_t k = 0; k < plan.steps.size(); ++k) {
    const Step& st = plan.steps[k];
    StepRt& sr = inst.steps[k];
    switch (st.kind) {
      case StepKind::Gemm: {
        if (sr.skip) break;
        if (st.skinny) {
          rt.launch(sr.kernel, sr.cfg, sr.params.data(), sr.params.size(), args, stream);
          break;
        }
        const Dtype d = dtype(st.out);
        if (sr.copy_c) rt.memcpy_d2d(sr.c.ptr, pointer(inst, st.gemm_c), nbytes(st.out), stream);
        const void* alpha = st.alpha_value >= 0
                                ? static_cast<const void*>(pointer(inst, st.alpha_value))
                                : static_cast<const void*>(args + st.alpha_slot);
        const void* beta = st.beta_value >= 0
                               ? static_cast<const void*>(pointer(inst, st.beta_value))
                               : static_cast<const void*>(args + st.beta_slot);
        if (st.indirect) {
          void* const* ptrs = reinterpret_cast<void* const*>(args + st.ptr_slots);
          rt.gemm_indirect(d, sr.blas, alpha, ptrs, ptrs + 1, beta, ptrs + 2, stream);
        } else {
          rt.gemm(d, sr.blas, alpha, sr.a, sr.b, beta, sr.c, stream);
        }
        break;
      }
      case StepKind::UpdateCopy: {
        int src = st.operands[0].value;
        void* dst = mirrors[static_cast<std::size_t>(st.target)]->data();
        std::size_t bytes = nbytes(st.target);
        if (!bytes) break;
        if (val(src).place == Place::Host) {
          Tensor t = host[static_cast<std::size_t>(src)].astype(dtype(st.target)).contiguous();
          rt.memcpy_h2d(dst, t.raw_data(), bytes, stream);
        } else {
          rt.memcpy_d2d(dst, pointer(inst, src), bytes, stream);
        }
        break;
      }
      case StepKind::HostOp:
        run_host_op(inst, st);
        break;
      case StepKind::IncRows: {
        // out = x, unless updating x in place (both fixed for the instance: capturable).
        char* out = pointer(inst, st.out);
        const char* x = pointer(inst, st.operands[0].value);
        if (out != x && nbytes(st.out)) rt.memcpy_d2d(out, x, nbytes(st.out), stream);
        if (!sr.skip)
          rt.launch(sr.kernel, sr.cfg, sr.params.data(), sr.params.size(), args, stream);
        break;
      }
      default:
        if (sr.skip) break;
        if (st.try_dnn) {
          const Shape& s = shapes[static_cast<std::size_t>(st.out)];
          const std::int64_t cols = s.empty() ? 1 : s.back();
          const std::int64_t rows = cols ? numel(st.out) / cols : 0;
          const bool log = op_as<Softmax>(st.node)->log();
          // cuDNN rejects empty rows; the row kernel handles them.
          if (rows > 0 && cols > 0 &&
              rt.dnn_softmax(dtype(st.out), log, rows, cols, pointer(inst, st.operands[0].value),
                             pointer(inst, st.out), stream))
            break;
        }
        rt.launch(sr.kernel, sr.cfg, sr.params.data(), sr.params.size(), args, stream);
        break;
    }
  }
}

std::unique_ptr<Graph> CudaProgram::Impl::capture(Instance& inst, const std::int64_t* args) {
  try {
    rt.begin_capture(stream);
    try {
      enqueue(inst, args);
    } catch (...) {
      rt.end_capture(stream);
      throw;
    }
    return rt.end_capture(stream);
  } catch (const BackendError&) {
    return nullptr;  // the caller runs eagerly instead
  }
}

void CudaProgram::Impl::capture_call_graph(Instance& inst, CallState& cs) {
  const std::size_t bytes = cs.args.size() * 8;
  DeviceBuffer args(&rt.allocator(), std::max<std::size_t>(bytes, 8));
  if (bytes) rt.memcpy_h2d(args.get(), cs.args.data(), bytes, stream);
  std::unique_ptr<Graph> g = capture(inst, static_cast<const std::int64_t*>(args.get()));
  if (!g) return;  // the instance's graph still serves this key
  cs.args_dev = std::move(args);
  cs.graph = std::move(g);
  ++call_graphs;
}

void CudaProgram::Impl::clear_memo() {
  // Call graphs read their argument blocks when they run: none may still be in flight.
  if (call_graphs) rt.synchronize(stream);
  memo.clear();
  call_graphs = 0;
}

std::size_t CudaProgram::Impl::output_staging_bytes() const {
  std::size_t staged = 0;
  for_each_device_output(0, [&](std::size_t, int, std::size_t off, std::size_t n) {
    staged = off + (n + 15) / 16 * 16;
  });
  return staged;
}

// Settles a slot's unread outputs (each copies itself out of the slot), so the slot can be
// overwritten.
static void settle_slot(OutSlot& slot) {
  for (const std::weak_ptr<Storage>& w : slot.waiting)
    if (std::shared_ptr<Storage> s = w.lock()) s->data();
  slot.waiting.clear();
}

void CudaProgram::Impl::stage_outputs_lazily(const Instance& inst, std::size_t output_bytes,
                                             std::vector<Tensor>& results) {
  if (out_slots.empty()) {
    out_slots.resize(kOutSlots);
    for (OutSlot& slot : out_slots) slot.event = rt.create_event();
  }
  OutSlot& slot = out_slots[out_next++ % out_slots.size()];
  settle_slot(slot);
  if (output_bytes > slot.bytes) {
    // A copy for an output nobody kept may still be landing in the old block.
    rt.event_synchronize(slot.event);
    if (slot.pinned) rt.host_free(slot.pinned);
    slot.pinned = nullptr;
    slot.pinned = rt.host_alloc(output_bytes);
    slot.bytes = output_bytes;
  }
  char* const pinned = static_cast<char*>(slot.pinned);
  for_each_device_output(0, [&](std::size_t k, int o, std::size_t off, std::size_t n) {
    results[k] = Tensor::empty(shapes[static_cast<std::size_t>(o)], dtype(o));
    if (!n) return;
    rt.memcpy_d2h(pinned + off, pointer(inst, o), n, stream);
    Runtime* r = &rt;
    const Event ev = slot.event;
    const char* src = pinned + off;
    results[k].storage()->set_pending([r, ev, src, n](void* dst) {
      r->event_synchronize(ev);
      std::memcpy(dst, src, n);
    });
    slot.waiting.push_back(results[k].storage());
  });
  rt.record_event(slot.event, stream);
}

// Outputs (and the error word) through one pinned block, then a stream sync: for calls with
// index checks, whose errors belong to the call, and for large outputs.
void CudaProgram::Impl::stage_outputs_waiting(const Instance& inst, std::size_t output_bytes,
                                              std::vector<Tensor>& results) {
  const std::size_t staged = (plan.any_checks ? 8 : 0) + output_bytes;
  if (staged > out_pinned_bytes) {
    if (out_pinned) rt.host_free(out_pinned);
    out_pinned = nullptr;
    out_pinned = rt.host_alloc(staged);
    out_pinned_bytes = staged;
  }
  char* const pinned = static_cast<char*>(out_pinned);
  const std::size_t first = plan.any_checks ? 8 : 0;  // the error word comes first
  for_each_device_output(first, [&](std::size_t, int o, std::size_t off, std::size_t n) {
    if (n) rt.memcpy_d2h(pinned + off, pointer(inst, o), n, stream);
  });
  int err = 0;
  if (plan.any_checks) rt.memcpy_d2h(pinned, err_dev.get(), sizeof err, stream);
  rt.synchronize(stream);
  if (plan.any_checks) std::memcpy(&err, pinned, sizeof err);
  for_each_device_output(first, [&](std::size_t k, int o, std::size_t off, std::size_t n) {
    results[k] = Tensor::empty(shapes[static_cast<std::size_t>(o)], dtype(o));
    if (n) std::memcpy(results[k].raw_data(), pinned + off, n);
  });
  if (err) {
    rt.memset_d(err_dev.get(), 0, 8, stream);
    std::string who;
    for (const Step& st : plan.steps)
      if (st.checks) who += "\n  " + st.node->describe();
    throw ValueError(
        "cuda: a label or index is out of range (a class label negative or not below the "
        "number of classes, or a take/inc_rows row index outside [-rows, rows)), in one of:" +
        who);
  }
}

// ---------------------------------------------------------------------------------------
// CudaProgram
// ---------------------------------------------------------------------------------------

CudaProgram::CudaProgram(Runtime& rt, const FunctionGraph& fg, Plan plan)
    : plan_(std::move(plan)), impl_(std::make_unique<Impl>(rt, plan_)) {
  Impl& m = *impl_;
  (void)fg;
  m.graphs = !env_off("THEA_CUDA_GRAPHS");
  m.call_graphs_enabled = m.graphs && !env_off("THEA_CUDA_CALL_GRAPHS");
  m.memo_enabled = !env_off("THEA_CUDA_CALL_MEMO");
  m.lazy_outputs = !env_off("THEA_CUDA_LAZY_OUTPUTS");
  if (const char* p = std::getenv("THEA_PROFILE")) m.profile = *p && std::string(p) != "0";
  if (!plan_.source.empty()) {
    m.module = rt.load_module(plan_.source, "function");
    stats_.compile_seconds = m.module->compile_seconds;
    stats_.from_cache = m.module->from_cache;
  }
  m.stream = rt.create_stream();
  m.args_dev =
      DeviceBuffer(&rt.allocator(), static_cast<std::size_t>(std::max(plan_.n_args, 1)) * 8);
  m.err_dev = DeviceBuffer(&rt.allocator(), 8);
  rt.memset_d(m.err_dev.get(), 0, 8, m.stream);
  for (std::size_t i = 0; i < plan_.values.size(); ++i) {
    const Value& v = plan_.values[i];
    if (v.place == Place::Constant) {
      Tensor c = v.node->value.contiguous();
      std::size_t n = static_cast<std::size_t>(c.numel()) * dtype_size(c.dtype());
      DeviceBuffer b(&rt.allocator(), std::max<std::size_t>(n, 1));
      if (n) rt.memcpy_h2d(b.get(), c.raw_data(), n, m.stream);
      m.constants.emplace(static_cast<int>(i), std::move(b));
    }
    if (v.place == Place::Shared) {
      m.keep_alive.push_back(v.node);
      m.shared_values.push_back(i);
    }
  }
  for (const Step& st : plan_.steps) m.has_host_steps |= st.kind == StepKind::HostOp;
  rt.synchronize(m.stream);
}

CudaProgram::~CudaProgram() {
  Impl& m = *impl_;
  if (m.profile && m.prof_calls) {
    const double c = static_cast<double>(m.prof_calls);
    std::fprintf(stderr,
                 "thea cuda profile: %zu replayed calls (%zu of a call key's own graph), %zu "
                 "argument uploads in all; host us/call: prepare %.2f, upload %.2f, launch %.2f, "
                 "outputs+sync %.2f\n",
                 m.prof_calls, stats_.call_graph_launches, stats_.args_uploads,
                 m.prof_ns[0] / c * 1e-3, m.prof_ns[1] / c * 1e-3, m.prof_ns[2] / c * 1e-3,
                 m.prof_ns[3] / c * 1e-3);
  }
  try {
    m.rt.synchronize(m.stream);
  } catch (...) {
  }
  m.instances.clear();
  m.args_dev.reset();
  m.err_dev.reset();
  m.constants.clear();
  try {
    // Mirrors may still point at our event; they only wait on it, so clear theirs first.
    for (const NodePtr& n : m.keep_alive) {
      auto* mir = dynamic_cast<CudaMirror*>(n->shared->mirror.get());
      if (mir && mir->last_stream == m.stream) {
        mir->last_stream = nullptr;
        mir->event_stale = false;
      }
    }
    if (m.out_pinned) m.rt.host_free(m.out_pinned);
    // Outputs still unread copy themselves out before their slots go.
    for (OutSlot& slot : m.out_slots) {
      settle_slot(slot);
      if (slot.pinned) m.rt.host_free(slot.pinned);
      m.rt.destroy_event(slot.event);
    }
    // The stream was synchronized above: no copy still reads a block.
    for (Event e : m.ring_events) m.rt.destroy_event(e);
    for (void* p : m.ring) m.rt.host_free(p);
    m.rt.destroy_stream(m.stream);
  } catch (...) {
  }
}

std::size_t CudaProgram::kernel_count() const { return plan_.kernel_launches(); }

std::string CudaProgram::describe() const { return plan_.describe(); }

std::vector<Tensor> CudaProgram::run(const std::vector<Tensor>& inputs) {
  Impl& m = *impl_;
  Runtime& rt = m.rt;
  const auto t_begin = prof_now(m.profile);
  stats_.calls++;
  m.prepare_mirrors();
  std::vector<void*>& mirror_ptrs = m.call_mirror_ptrs;
  mirror_ptrs.clear();
  for (std::size_t i : m.shared_values) mirror_ptrs.push_back(m.mirrors[i]->data());
  // The call key: input shapes and the values of host scalar inputs.
  std::vector<std::int64_t>& key = m.call_key;
  key.clear();
  for (std::size_t k = 0; k < m.plan.inputs.size(); ++k) {
    int v = m.plan.inputs[k];
    if (v < 0) continue;
    key.push_back(inputs[k].ndim());
    for (auto d : inputs[k].shape()) key.push_back(d);
    if (m.val(v).place == Place::Host) key.push_back(bits_of(inputs[k]));
  }
  CallState* hit = nullptr;
  if (m.memo_enabled) {
    auto mit = m.memo.find(key);
    if (mit != m.memo.end() && mit->second.mirror_ptrs == mirror_ptrs) hit = &mit->second;
  }
  // On a hit the resolved state is swapped in for this call and swapped back after it.
  struct SwapBack {
    CudaProgram::Impl& m;
    CallState* cs;
    ~SwapBack() {
      if (!cs) return;
      std::swap(m.host, cs->host);
      std::swap(m.shapes, cs->shapes);
      std::swap(m.views, cs->views);
      std::swap(m.contig_copies, cs->contig_copies);
    }
  } swap_back{m, hit};
  Instance* instp = nullptr;
  if (hit) {
    std::swap(m.host, hit->host);
    std::swap(m.shapes, hit->shapes);
    std::swap(m.views, hit->views);
    std::swap(m.contig_copies, hit->contig_copies);
    instp = hit->inst;
    m.args_host = hit->args;
    // Inputs' host tensors are this call's (host steps read them), not the memo's.
    for (std::size_t k = 0; k < m.plan.inputs.size(); ++k)
      if (m.plan.inputs[k] >= 0) m.host[static_cast<std::size_t>(m.plan.inputs[k])] = inputs[k];
  } else {
    m.evaluate_host_and_shapes(inputs);
    m.resolve_views();
    std::vector<std::int64_t> sig = m.signature();
    auto it = m.instances.find(sig);
    if (it != m.instances.end() && mirror_ptrs != it->second->mirror_ptrs) {
      // A shared variable's device buffer was replaced since the instance was built.
      rt.synchronize(m.stream);
      stats_.arena_bytes -= it->second->arena_bytes;
      stats_.unshared_bytes -= it->second->unshared_bytes;
      m.instances.erase(it);
      it = m.instances.end();
      m.clear_memo();
    }
    if (it == m.instances.end()) {
      it = m.instances.emplace(sig, m.build_instance()).first;
      stats_.instances++;
      stats_.arena_bytes += it->second->arena_bytes;
      stats_.unshared_bytes += it->second->unshared_bytes;
    }
    instp = it->second.get();
    m.fill_args(*instp);
    if (m.memo_enabled) {
      if (m.memo.size() >= 4096) m.clear_memo();
      CallState cs{m.host,      m.shapes, m.views,        m.contig_copies, m.args_host,
                   mirror_ptrs, instp,    DeviceBuffer(), nullptr};
      m.memo.emplace(key, std::move(cs));
    }
  }
  Instance& inst = *instp;
  const auto t_prepared = prof_now(m.profile);
  const bool capture = m.graphs && inst.capturable && !m.has_host_steps;
  // A key seen before, on an instance whose own graph proved capture works: its own graph.
  CallState* own = hit && capture && m.call_graphs_enabled && inst.graph ? hit : nullptr;
  if (own && !own->graph && m.call_graphs < kMaxCallGraphs) m.capture_call_graph(inst, *own);
  if (own && !own->graph) own = nullptr;

  if (!own && (!m.args_valid || m.args_host != m.args_uploaded)) {
    stats_.args_uploads++;
    const std::size_t bytes = m.args_host.size() * 8;
    // 64 blocks in groups of 8 with one event per group, recorded after the group's last
    // copy: a step pays an event call once in 8, and a block is reused 64 calls later.
    constexpr std::size_t kGroup = 8, kGroups = 8;
    if (m.ring.empty()) {
      for (std::size_t k = 0; k < kGroup * kGroups; ++k) m.ring.push_back(rt.host_alloc(bytes));
      for (std::size_t g = 0; g < kGroups; ++g) {
        m.ring_events.push_back(rt.create_event());
        rt.record_event(m.ring_events.back(), m.stream);
      }
    }
    const std::size_t k = m.ring_next++ % m.ring.size();
    // Entering a group: the copies that last read its blocks are done.
    if (k % kGroup == 0) rt.event_synchronize(m.ring_events[k / kGroup]);
    std::memcpy(m.ring[k], m.args_host.data(), bytes);
    rt.memcpy_h2d(m.args_dev.get(), m.ring[k], bytes, m.stream);
    if (k % kGroup == kGroup - 1) rt.record_event(m.ring_events[k / kGroup], m.stream);
    m.args_uploaded = m.args_host;
    m.args_valid = true;
  }
  for (std::size_t k = 0; k < m.plan.inputs.size(); ++k) {
    int v = m.plan.inputs[k];
    if (v < 0 || m.val(v).place != Place::Input) continue;
    Tensor t = inputs[k].contiguous();
    std::size_t n = m.nbytes(v);
    if (n) rt.memcpy_h2d(m.root_pointer(inst, v), t.raw_data(), n, m.stream);
  }

  const auto t_uploaded = prof_now(m.profile);
  const std::int64_t* args_dev = static_cast<const std::int64_t*>(m.args_dev.get());
  if (own) {
    own->graph->launch(m.stream);
    stats_.graph_launches++;
    stats_.call_graph_launches++;
  } else if (inst.graph) {
    inst.graph->launch(m.stream);
    stats_.graph_launches++;
  } else if (capture && inst.calls >= 1) {
    // Capture on the second call: the first ran eagerly and proved every step works.
    std::unique_ptr<Graph> g = m.capture(inst, args_dev);
    if (g) {
      inst.graph = std::move(g);
      inst.graph->launch(m.stream);
      stats_.graph_launches++;
    } else {
      inst.capturable = false;
      m.enqueue(inst, args_dev);
      stats_.eager_calls++;
    }
  } else {
    m.enqueue(inst, args_dev);
    stats_.eager_calls++;
  }
  inst.calls++;

  // Later users of these shared variables on other streams wait for this call.
  // (recorded lazily by the next user on another stream: no event call per step).
  for (CudaMirror* mir : m.mirrors) {
    if (!mir) continue;
    mir->last_stream = m.stream;
    mir->event_stale = true;
  }
  // Updated shared variables now live on the device only.
  for (const auto& [s, v] : m.plan.updates) {
    SharedState& st = *m.val(s).node->shared;
    st.host_valid = false;
    st.version++;
    m.mirrors[static_cast<std::size_t>(s)]->set_device_valid();
  }

  const auto t_launched = prof_now(m.profile);
  // Outputs (contiguous by construction) come back through pinned staging: a
  // device-to-pageable copy is synchronous and staged by the driver, ~10 us even for a scalar.
  std::vector<Tensor> results(m.plan.outputs.size());
  const std::size_t output_bytes = m.output_staging_bytes();
  const bool lazy = m.lazy_outputs && !m.plan.any_checks && !m.plan.outputs.empty() &&
                    output_bytes <= kLazyOutputBytes;
  if (lazy)
    m.stage_outputs_lazily(inst, output_bytes, results);
  else if (!m.plan.outputs.empty() || m.plan.any_checks)
    m.stage_outputs_waiting(inst, output_bytes, results);
  // Outputs computed on the host (sizes, scalar arithmetic on inputs).
  for (std::size_t k = 0; k < m.plan.outputs.size(); ++k) {
    const int o = m.plan.outputs[k];
    if (m.val(o).place == Place::Host) results[k] = m.host[static_cast<std::size_t>(o)].clone();
  }
  // Only steady-state calls (memoized state, graph replayed) count: the first calls build.
  if (m.profile && hit && (own || inst.graph)) {
    const auto t_end = prof_now(true);
    m.prof_ns[0] += ns_between(t_begin, t_prepared);
    m.prof_ns[1] += ns_between(t_prepared, t_uploaded);
    m.prof_ns[2] += ns_between(t_uploaded, t_launched);
    m.prof_ns[3] += ns_between(t_launched, t_end);
    m.prof_calls++;
  }
  return results;
}

}  // namespace thea::cuda
