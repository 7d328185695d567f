#include "thea/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "thea/error.hpp"
#include "thea/ops/fused.hpp"

namespace thea::sched {

std::string dim_str(const Dim& d) {
  return d.is_static() ? std::to_string(d.size) : "d" + std::to_string(d.sym);
}

std::string dims_str(const std::vector<Dim>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + dim_str(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

namespace {

// ---------------------------------------------------------------------------------------
// Dimension symbols: union-find over (node, axis), joined wherever an op forces equality.
// ---------------------------------------------------------------------------------------

class DimTable {
 public:
  explicit DimTable(const std::vector<NodePtr>& order) {
    for (const NodePtr& n : order) {
      base_[n.get()] = static_cast<int>(parent_.size());
      for (std::int64_t s : n->type.shape) {
        parent_.push_back(static_cast<int>(parent_.size()));
        size_.push_back(s);
        owner_.push_back({n, static_cast<int>(size_.size() - 1 - base_[n.get()])});
      }
    }
    for (const NodePtr& n : order)
      if (n->kind == NodeKind::Apply) unify_node(*n);
    // Number the classes.
    for (std::size_t i = 0; i < parent_.size(); ++i) {
      int r = find(static_cast<int>(i));
      if (size_[r] >= 0) continue;
      if (!sym_of_root_.count(r)) {
        sym_of_root_[r] = static_cast<int>(sources_.size());
        sources_.push_back(owner_[i]);
      }
    }
  }

  Dim dim(const Node* n, int axis) {
    int r = find(base_.at(n) + axis);
    if (size_[r] >= 0) return {size_[r], -1};
    return {-1, sym_of_root_.at(r)};
  }
  std::vector<Dim> dims(const Node* n) {
    std::vector<Dim> d;
    for (int a = 0; a < n->type.ndim(); ++a) d.push_back(dim(n, a));
    return d;
  }
  int num_syms() const { return static_cast<int>(sources_.size()); }
  const std::vector<std::pair<NodePtr, int>>& sources() const { return sources_; }

 private:
  int find(int x) {
    while (parent_[x] != x) x = parent_[x] = parent_[parent_[x]];
    return x;
  }
  void unite(const Node* a, int ax, const Node* b, int bx) {
    if (ax < 0 || bx < 0 || ax >= a->type.ndim() || bx >= b->type.ndim()) return;
    int ra = find(base_.at(a) + ax), rb = find(base_.at(b) + bx);
    if (ra == rb) return;
    // A static size wins (the class becomes static).
    if (size_[ra] < 0) std::swap(ra, rb);
    parent_[rb] = ra;
    if (size_[ra] < 0) size_[ra] = size_[rb];
  }
  void same_shape(const Node* a, const Node* b) {
    if (a->type.ndim() != b->type.ndim()) return;
    for (int d = 0; d < a->type.ndim(); ++d) unite(a, d, b, d);
  }

  void unify_node(const Node& n) {
    const Op& op = *n.op;
    const int r = n.type.ndim();
    if (op.traits().elementwise) {
      for (const NodePtr& in : n.inputs) {
        const int k = in->type.ndim(), off = r - k;
        for (int a = 0; a < k; ++a)
          if (in->type.shape[a] != 1) unite(&n, a + off, in.get(), a);
      }
    } else if (auto* red = dynamic_cast<const Reduce*>(&op)) {
      const Node* x = n.inputs[0].get();
      std::vector<bool> reduced(x->type.ndim(), red->axes().empty());
      for (int a : red->axes()) reduced[a] = true;
      int o = 0;
      for (int a = 0; a < x->type.ndim(); ++a) {
        if (!reduced[a]) unite(&n, o, x, a);
        if (!reduced[a] || red->keepdims()) ++o;
      }
    } else if (auto* arg = dynamic_cast<const ArgReduce*>(&op)) {
      const Node* x = n.inputs[0].get();
      if (arg->axis() >= 0) {
        int o = 0;
        for (int a = 0; a < x->type.ndim(); ++a) {
          if (a != arg->axis()) unite(&n, o, x, a);
          if (a != arg->axis() || arg->keepdims()) ++o;
        }
      }
    } else if (dynamic_cast<const Dot*>(&op)) {
      const Node* a = n.inputs[0].get();
      const Node* b = n.inputs[1].get();
      const int ra = a->type.ndim(), rb = b->type.ndim();
      unite(a, ra - 1, b, rb == 2 ? 0 : 0);
      if (ra == 2) unite(&n, 0, a, 0);
      if (rb == 2) unite(&n, ra == 2 ? 1 : 0, b, 1);
    } else if (auto* g = dynamic_cast<const Gemm*>(&op)) {
      const Node* a = n.inputs[Gemm::kA].get();
      const Node* b = n.inputs[Gemm::kB].get();
      const int am = g->trans_a() ? 1 : 0, ak = 1 - am;
      const int bk = g->trans_b() ? 1 : 0, bn = 1 - bk;
      unite(&n, 0, a, am);
      unite(&n, 1, b, bn);
      unite(a, ak, b, bk);
      if (g->accumulate()) same_shape(&n, n.inputs[Gemm::kC].get());
    } else if (auto* ds = dynamic_cast<const DimShuffle*>(&op)) {
      const auto& p = ds->pattern();
      for (int k = 0; k < static_cast<int>(p.size()); ++k)
        if (p[k] >= 0) unite(&n, k, n.inputs[0].get(), p[k]);
    } else if (dynamic_cast<const Softmax*>(&op)) {
      same_shape(&n, n.inputs[0].get());
    } else if (dynamic_cast<const SoftmaxGrad*>(&op)) {
      same_shape(&n, n.inputs[0].get());
      same_shape(&n, n.inputs[1].get());
    } else if (dynamic_cast<const CrossentropySoftmax*>(&op)) {
      const Node* z = n.inputs[0].get();
      const Node* y = n.inputs[1].get();
      if (is_float(y->type.dtype)) {
        same_shape(z, y);
        for (int a = 0; a + 1 < z->type.ndim(); ++a) unite(&n, a, z, a);
      } else if (z->type.ndim() == 2) {
        unite(&n, 0, z, 0);
        unite(y, 0, z, 0);
      }
    } else if (dynamic_cast<const CrossentropySoftmax1HotDx*>(&op) ||
               dynamic_cast<const CrossentropyCategorical1HotGrad*>(&op)) {
      same_shape(&n, n.inputs[1].get());
      unite(n.inputs[0].get(), 0, &n, 0);
      unite(n.inputs[2].get(), 0, &n, 0);
    } else if (dynamic_cast<const CrossentropyCategorical1Hot*>(&op)) {
      unite(&n, 0, n.inputs[0].get(), 0);
      unite(n.inputs[1].get(), 0, n.inputs[0].get(), 0);
    } else if (dynamic_cast<const OneHot*>(&op)) {
      unite(&n, 0, n.inputs[0].get(), 0);
    }
  }

  std::vector<int> parent_;
  std::vector<std::int64_t> size_;
  std::vector<std::pair<NodePtr, int>> owner_;
  std::unordered_map<const Node*, int> base_;
  std::unordered_map<int, int> sym_of_root_;
  std::vector<std::pair<NodePtr, int>> sources_;
};

// ---------------------------------------------------------------------------------------
// Node classification
// ---------------------------------------------------------------------------------------

bool all_static_ones(const TensorType& t) {
  for (std::int64_t s : t.shape)
    if (s != 1) return false;
  return true;
}

// A constant small enough to become a literal in generated code.
bool is_scalar_constant(const Node& n) {
  return n.kind == NodeKind::Constant && n.value.numel() == 1 && all_static_ones(n.type);
}

// Ops a loop kernel computes.
bool is_loop_op(const Node& n) {
  if (n.kind != NodeKind::Apply) return false;
  const Op& op = *n.op;
  if (op.traits().elementwise) return dynamic_cast<const Elemwise*>(&op) != nullptr;
  if (dynamic_cast<const Reduce*>(&op)) return true;
  if (auto* a = dynamic_cast<const ArgReduce*>(&op)) return a->axis() >= 0;
  if (dynamic_cast<const Softmax*>(&op)) return is_float(n.type.dtype);
  if (dynamic_cast<const SoftmaxGrad*>(&op)) return is_float(n.type.dtype);
  if (dynamic_cast<const CrossentropySoftmax*>(&op))
    return is_float(n.inputs[1]->type.dtype) && is_float(n.inputs[0]->type.dtype);
  if (dynamic_cast<const SizeOf*>(&op)) return true;
  return false;
}

// Reshape that only inserts or removes static size-1 axes: as a view it maps axes.
bool unit_reshape_map(const Node& n, std::vector<int>* map) {
  if (!dynamic_cast<const Reshape*>(n.op.get()) || n.inputs.size() != 1) return false;
  const Shape& in = n.inputs[0]->type.shape;
  const Shape& out = n.type.shape;
  map->assign(out.size(), -1);
  std::size_t i = 0;
  for (std::size_t o = 0; o < out.size(); ++o) {
    if (out[o] == 1) {
      // Pair with an input axis of static size 1 if it is the next one, else a new axis.
      if (i < in.size() && in[i] == 1) ++i;
      continue;
    }
    while (i < in.size() && in[i] == 1) ++i;
    if (i >= in.size() || in[i] < 0 || in[i] != out[o]) return false;
    (*map)[o] = static_cast<int>(i++);
  }
  while (i < in.size() && in[i] == 1) ++i;
  return i == in.size();
}

// The axis map of a view node onto its input (view axis k <- input axis map[k] or -1), when
// the node is a pure axis view (dimshuffle, size-1 reshape).
bool view_map(const Node& n, std::vector<int>* map) {
  if (n.kind != NodeKind::Apply) return false;
  if (auto* ds = dynamic_cast<const DimShuffle*>(n.op.get())) {
    *map = ds->pattern();
    return true;
  }
  return unit_reshape_map(n, map);
}

// Scalar-like values recomputed inside every kernel that needs them instead of being
// stored: literals, sizes and elementwise arithmetic on those (1 / n, -lr, ...).
bool is_inlinable(const Node& n, std::unordered_map<const Node*, bool>& memo) {
  auto it = memo.find(&n);
  if (it != memo.end()) return it->second;
  bool ok = false;
  if (is_scalar_constant(n)) {
    ok = true;
  } else if (n.kind == NodeKind::Apply && all_static_ones(n.type)) {
    if (dynamic_cast<const SizeOf*>(n.op.get())) {
      ok = true;
    } else if (dynamic_cast<const Elemwise*>(n.op.get())) {
      ok = true;
      for (const NodePtr& in : n.inputs) ok = ok && is_inlinable(*in, memo);
    } else if (dynamic_cast<const DimShuffle*>(n.op.get()) ||
               dynamic_cast<const Reshape*>(n.op.get())) {
      ok = n.inputs.size() == 1 && all_static_ones(n.inputs[0]->type) &&
           is_inlinable(*n.inputs[0], memo);
    }
  }
  memo[&n] = ok;
  return ok;
}

// ---------------------------------------------------------------------------------------
// Loop kernel builder: grows one fused group a node at a time; try_add works on a copy.
// ---------------------------------------------------------------------------------------

struct Env;  // the scheduler's shared state (buffers, kernels)

struct Group {
  LoopKernel lk;
  std::unordered_map<const Node*, int> expr_of;           // group values
  std::unordered_map<const Node*, std::vector<int>> map;  // value axis -> domain axis
  std::vector<NodePtr> nodes;                             // in order of addition
  std::map<std::string, int> cse;                         // expression hash-consing
  bool inner_set = false;
  std::unordered_set<const Node*> externals;  // values read from buffers
  int kernel = -1;                            // its index in Env::kernels
};

struct Env {
  const FunctionGraph& fg;
  ScheduleOptions options;
  DimTable dims;
  Schedule sched;
  std::unordered_map<const Node*, int> buffer_of;  // materialized values
  std::unordered_map<const Node*, int> group_of;   // node -> group index (loop nodes)
  std::unordered_map<const Node*, bool> inline_memo;
  std::unordered_map<const Node*, std::vector<NodePtr>> clients;
  std::unordered_set<const Node*> roots;  // outputs and update values
  std::vector<Group> groups;
  // Kernel dependencies (indices of kernels each kernel reads from), for ordering/cycles.
  std::vector<std::unordered_set<int>> deps;
  std::unordered_map<const Node*, int> producer_kernel;  // value -> kernel computing it

  Env(const FunctionGraph& g, const ScheduleOptions& o, const std::vector<NodePtr>& order)
      : fg(g), options(o), dims(order) {}

  bool inlinable(const Node& n) { return is_inlinable(n, inline_memo); }
};

std::vector<int> identity_map(int r) {
  std::vector<int> m(r);
  std::iota(m.begin(), m.end(), 0);
  return m;
}

// Varying domain axes of a value with axis map `m`.
std::vector<bool> varies(const std::vector<int>& m, int rank) {
  std::vector<bool> v(rank, false);
  for (int d : m)
    if (d >= 0) v[d] = true;
  return v;
}

int external_buffer(Env& env, const NodePtr& v);
bool dense_buffer(const Schedule& s, int b);

class Builder {
 public:
  Builder(Env& env, Group& g) : env_(env), g_(g) {}

  // Adds node n to the group; false (group unchanged by the caller's copy) when it does not
  // fit: another iteration domain, another reduction axis set, a cycle, ...
  bool add(const NodePtr& n, bool seed);

 private:
  int rank() const { return static_cast<int>(g_.lk.domain.size()); }
  int add_expr(Expr e);
  int konst(double v, Dtype dt);
  int scalar(ScalarOp op, std::vector<int> args, Dtype out, Dtype compute, NodePtr node = nullptr);
  int cast_to(int e, Dtype dt);
  int reduce(ReduceKind kind, int arg, Dtype out, bool final, NodePtr node = nullptr);
  // Expression for graph value v seen through axis map `m` (value axis -> domain axis);
  // -1 when it cannot be read that way.
  int value(const NodePtr& v, const std::vector<int>& m);
  int load_external(const NodePtr& v, const std::vector<int>& m);
  // The axis map of an elementwise-style output from its in-group inputs; false on conflict.
  bool output_map(const Node& n, std::vector<int>* out);
  bool map_fits(const Node& v, const std::vector<int>& m);
  bool set_inner(const std::vector<bool>& axes);
  bool covers_its_level(const std::vector<int>& m) const;
  bool lower(const NodePtr& n, const std::vector<int>& m);
  int expr_level_check();

  Env& env_;
  Group& g_;
};

int Builder::add_expr(Expr e) {
  std::ostringstream key;
  key << static_cast<int>(e.kind) << '|' << static_cast<int>(e.dtype) << '|';
  for (int a : e.args) key << a << ',';
  key << '|' << e.access << '|' << e.value << '|' << static_cast<int>(e.op) << '|'
      << static_cast<int>(e.compute) << '|' << static_cast<int>(e.reduce) << e.final << e.is_max
      << '|' << e.axis << '|';
  for (int a : e.axes) key << a << ',';
  for (bool c : e.convert) key << c;
  auto it = g_.cse.find(key.str());
  if (it != g_.cse.end()) {
    if (e.node && !g_.lk.exprs[it->second].node) g_.lk.exprs[it->second].node = e.node;
    return it->second;
  }
  g_.lk.exprs.push_back(std::move(e));
  int id = static_cast<int>(g_.lk.exprs.size()) - 1;
  g_.cse[key.str()] = id;
  return id;
}

int Builder::konst(double v, Dtype dt) {
  Expr e;
  e.kind = ExprKind::Const;
  e.dtype = dt;
  e.value = v;
  return add_expr(e);
}

int Builder::scalar(ScalarOp op, std::vector<int> args, Dtype out, Dtype compute, NodePtr node) {
  Expr e;
  e.kind = ExprKind::Scalar;
  e.op = op;
  e.dtype = out;
  e.compute = compute;
  e.convert.assign(args.size(), true);
  if (op == ScalarOp::Switch) e.convert[0] = false;
  if (op == ScalarOp::Second) e.convert[0] = false;
  e.args = std::move(args);
  e.node = std::move(node);
  return add_expr(e);
}

int Builder::cast_to(int e, Dtype dt) {
  if (g_.lk.exprs[e].dtype == dt) return e;
  Expr c;
  c.kind = ExprKind::Scalar;
  c.op = ScalarOp::Cast;
  c.dtype = dt;
  c.compute = g_.lk.exprs[e].dtype;
  c.convert = {false};
  c.args = {e};
  return add_expr(c);
}

int Builder::reduce(ReduceKind kind, int arg, Dtype out, bool final, NodePtr node) {
  Expr e;
  e.kind = ExprKind::Reduce;
  e.reduce = kind;
  e.args = {arg};
  e.final = final;
  e.dtype = out;
  const Dtype in = g_.lk.exprs[arg].dtype;
  if (kind == ReduceKind::Sum || kind == ReduceKind::Prod)
    e.accum = is_float(in) ? Dtype::Float64 : Dtype::Int64;  // as Reduce::perform accumulates
  else
    e.accum = in;
  e.node = std::move(node);
  return add_expr(e);
}

bool Builder::map_fits(const Node& v, const std::vector<int>& m) {
  if (static_cast<int>(m.size()) != v.type.ndim()) return false;
  std::vector<bool> used(rank(), false);
  for (int a = 0; a < v.type.ndim(); ++a) {
    if (m[a] < 0) {
      if (v.type.shape[a] != 1) return false;  // a varying axis must move with the domain
      continue;
    }
    if (m[a] >= rank() || used[m[a]]) return false;
    used[m[a]] = true;
    if (env_.dims.dim(&v, a) != g_.lk.domain[m[a]]) return false;
  }
  return true;
}

int Builder::load_external(const NodePtr& v0, const std::vector<int>& m0) {
  // Look through axis views (dimshuffle, size-1 reshape) to the stored value.
  NodePtr v = v0;
  std::vector<int> m = m0;
  std::vector<int> vm;
  while (!env_.buffer_of.count(v.get()) && view_map(*v, &vm)) {
    const NodePtr& in = v->inputs[0];
    std::vector<int> im(in->type.ndim(), -1);
    for (std::size_t k = 0; k < vm.size(); ++k)
      if (vm[k] >= 0) im[vm[k]] = m[k];
    v = in;
    m = im;
  }
  if (!map_fits(*v, m)) return -1;
  int buf = external_buffer(env_, v);
  if (buf < 0) return -1;
  const Buffer& bb = env_.sched.buffers[buf];
  if (bb.kind == BufferKind::View && bb.reinterpret && !dense_buffer(env_.sched, bb.base))
    return -1;
  Access acc;
  acc.buffer = buf;
  acc.axis_of.assign(rank(), -1);
  for (int a = 0; a < static_cast<int>(m.size()); ++a)
    if (m[a] >= 0) acc.axis_of[m[a]] = a;
  int ai = -1;
  for (std::size_t i = 0; i < g_.lk.accesses.size(); ++i)
    if (g_.lk.accesses[i].buffer == acc.buffer && g_.lk.accesses[i].axis_of == acc.axis_of)
      ai = static_cast<int>(i);
  if (ai < 0) {
    g_.lk.accesses.push_back(acc);
    ai = static_cast<int>(g_.lk.accesses.size()) - 1;
  }
  Expr e;
  e.kind = ExprKind::Load;
  e.access = ai;
  e.dtype = v->type.dtype;
  g_.externals.insert(v.get());
  return add_expr(e);
}

int Builder::value(const NodePtr& v, const std::vector<int>& m) {
  auto it = g_.expr_of.find(v.get());
  if (it != g_.expr_of.end()) {
    // An in-group value is only available at the loop point it was computed for.
    const std::vector<int>& gm = g_.map.at(v.get());
    for (std::size_t a = 0; a < m.size(); ++a)
      if (m[a] != gm[a] && !(v->type.shape[a] == 1)) return -1;
    return it->second;
  }
  if (is_scalar_constant(*v)) {
    return konst(v->value.item<double>(), v->type.dtype);
  }
  if (env_.inlinable(*v) && v->kind == NodeKind::Apply) {
    // Recompute the scalar here (sizes, 1/n, ...): cheaper than a kernel and a buffer.
    if (auto* so = dynamic_cast<const SizeOf*>(v->op.get())) {
      const Node& x = *v->inputs[0];
      Expr e;
      e.kind = ExprKind::Count;
      e.dtype = v->type.dtype;
      std::vector<int> axes = so->axes();
      if (axes.empty()) axes = identity_map(x.type.ndim());
      // Count over dims of x: encode as (static product, syms) through `axes` = syms, `value`.
      double static_part = 1;
      for (int a : axes) {
        Dim d = env_.dims.dim(&x, a);
        if (d.is_static())
          static_part *= static_cast<double>(d.size);
        else
          e.axes.push_back(d.sym);
      }
      std::sort(e.axes.begin(), e.axes.end());
      e.value = static_part;
      e.node = v;
      return add_expr(e);
    }
    if (auto* ew = dynamic_cast<const Elemwise*>(v->op.get())) {
      std::vector<int> args;
      std::vector<Dtype> dts;
      for (const NodePtr& in : v->inputs) {
        int a = value(in, std::vector<int>(in->type.ndim(), -1));
        if (a < 0) return -1;
        args.push_back(a);
        dts.push_back(in->type.dtype);
      }
      if (ew->scalar_op() == ScalarOp::Cast)
        return scalar(ScalarOp::Cast, args, ew->cast_to(), dts[0], v);
      return scalar(ew->scalar_op(), args, v->type.dtype, ew->compute_dtype(dts), v);
    }
    // dimshuffle / reshape of a scalar: the same value.
    return value(v->inputs[0], std::vector<int>(v->inputs[0]->type.ndim(), -1));
  }
  return load_external(v, m);
}

bool Builder::output_map(const Node& n, std::vector<int>* out) {
  const int r = n.type.ndim();
  out->assign(r, -2);  // -2: unknown yet
  for (const NodePtr& in : n.inputs) {
    auto it = g_.map.find(in.get());
    if (it == g_.map.end()) continue;
    const int k = in->type.ndim(), off = r - k;
    for (int a = 0; a < k; ++a) {
      if (in->type.shape[a] == 1) continue;
      int d = it->second[a];
      int& o = (*out)[a + off];
      if (o == -2)
        o = d;
      else if (o != d)
        return false;
    }
  }
  for (int a = 0; a < r; ++a) {
    if ((*out)[a] != -2) continue;
    if (n.type.shape[a] == 1) {
      (*out)[a] = -1;
      continue;
    }
    // A varying axis no in-group input moves along: find the domain axis of that size,
    // aligned from the right like numpy broadcasting.
    const int d = rank() - (r - a);
    if (d < 0 || env_.dims.dim(&n, a) != g_.lk.domain[d]) return false;
    (*out)[a] = d;
  }
  return map_fits(n, *out);
}

bool Builder::set_inner(const std::vector<bool>& axes) {
  if (g_.inner_set) return axes == g_.lk.inner;
  g_.inner_set = true;
  g_.lk.inner = axes;
  return true;
}

bool Builder::lower(const NodePtr& np, const std::vector<int>& m) {
  const Node& n = *np;
  const Op& op = *n.op;
  const int r = rank();
  auto val = [&](int i, const std::vector<int>& im) { return value(n.inputs[i], im); };
  // The map of input i when it has the same shape layout as the output (numpy alignment).
  auto aligned = [&](int i) {
    const Node& in = *n.inputs[i];
    const int k = in.type.ndim(), off = n.type.ndim() - k;
    std::vector<int> im(k);
    for (int a = 0; a < k; ++a) im[a] = in.type.shape[a] == 1 ? -1 : m[a + off];
    return im;
  };
  int result = -1;
  if (auto* ew = dynamic_cast<const Elemwise*>(&op)) {
    std::vector<int> args;
    std::vector<Dtype> dts;
    for (std::size_t i = 0; i < n.inputs.size(); ++i) {
      int a = val(static_cast<int>(i), aligned(static_cast<int>(i)));
      if (a < 0) return false;
      args.push_back(a);
      dts.push_back(n.inputs[i]->type.dtype);
    }
    if (ew->scalar_op() == ScalarOp::Cast)
      result = scalar(ScalarOp::Cast, args, ew->cast_to(), dts[0], np);
    else
      result = scalar(ew->scalar_op(), args, n.type.dtype, ew->compute_dtype(dts), np);
  } else if (auto* ds = dynamic_cast<const DimShuffle*>(&op)) {
    const Node& in = *n.inputs[0];
    std::vector<int> im(in.type.ndim(), -1);
    for (std::size_t k = 0; k < ds->pattern().size(); ++k)
      if (ds->pattern()[k] >= 0) im[ds->pattern()[k]] = m[k];
    result = val(0, im);
    if (result < 0) return false;
  } else if (auto* red = dynamic_cast<const Reduce*>(&op)) {
    const Node& x = *n.inputs[0];
    // The input's map: kept axes follow the output's; reduced axes need a domain axis each.
    std::vector<bool> reduced(x.type.ndim(), red->axes().empty());
    for (int a : red->axes()) reduced[a] = true;
    std::vector<int> xm(x.type.ndim(), -1);
    int o = 0;
    std::vector<bool> raxes(r, false);
    auto xit = g_.map.find(n.inputs[0].get());
    for (int a = 0; a < x.type.ndim(); ++a) {
      if (!reduced[a]) {
        xm[a] = m[o];
      } else if (x.type.shape[a] != 1) {
        if (xit == g_.map.end()) return false;  // seeds come with the input's map
        xm[a] = xit->second[a];
        if (xm[a] < 0) return false;
        raxes[xm[a]] = true;
      }
      if (!reduced[a] || red->keepdims()) ++o;
    }
    int xe = val(0, xm);
    if (xe < 0) return false;
    // Final when the reduction covers every axis the input varies along at its level.
    std::vector<bool> xv = varies(xm, r);
    bool covers_all = true;
    for (int d = 0; d < r; ++d)
      if (xv[d] && !raxes[d]) covers_all = false;
    bool any = std::find(raxes.begin(), raxes.end(), true) != raxes.end();
    ReduceKind kind = red->kind() == ReduceKind::Mean ? ReduceKind::Sum : red->kind();
    Dtype acc_out = red->kind() == ReduceKind::Mean ? n.type.dtype : n.type.dtype;
    if (!any) {
      result = xe;  // reduction over size-1 axes only
      if (red->kind() == ReduceKind::Mean || g_.lk.exprs[xe].dtype != n.type.dtype)
        result = cast_to(xe, n.type.dtype);
    } else if (covers_all) {
      // Final: must cover the whole iteration at the input's level (checked by level pass).
      result = reduce(kind, xe,
                      kind == ReduceKind::Sum || kind == ReduceKind::Prod
                          ? (is_float(n.type.dtype) ? n.type.dtype : Dtype::Int64)
                          : n.type.dtype,
                      true, red->kind() == ReduceKind::Mean ? nullptr : np);
      g_.lk.has_final = true;
      g_.lk.exprs[result].axes.clear();
      for (int d = 0; d < r; ++d)
        if (raxes[d]) g_.lk.exprs[result].axes.push_back(d);
    } else {
      if (!set_inner(raxes)) return false;
      result = reduce(kind, xe,
                      is_float(n.type.dtype) || kind == ReduceKind::Max || kind == ReduceKind::Min
                          ? n.type.dtype
                          : Dtype::Int64,
                      false, red->kind() == ReduceKind::Mean ? nullptr : np);
    }
    if (any && red->kind() == ReduceKind::Mean) {
      Expr c;
      c.kind = ExprKind::Count;
      c.dtype = Dtype::Float64;
      double static_part = 1;
      for (int a = 0; a < x.type.ndim(); ++a) {
        if (!reduced[a]) continue;
        Dim d = env_.dims.dim(&x, a);
        if (d.is_static())
          static_part *= static_cast<double>(d.size);
        else
          c.axes.push_back(d.sym);
      }
      std::sort(c.axes.begin(), c.axes.end());
      c.value = static_part;
      int ce = add_expr(c);
      int s = cast_to(result, Dtype::Float64);
      int q = scalar(ScalarOp::Div, {s, ce}, Dtype::Float64, Dtype::Float64);
      result = cast_to(q, n.type.dtype);
      g_.lk.exprs[result].node = np;
    }
    (void)acc_out;
  } else if (auto* arg = dynamic_cast<const ArgReduce*>(&op)) {
    const Node& x = *n.inputs[0];
    auto xit = g_.map.find(n.inputs[0].get());
    std::vector<int> xm(x.type.ndim(), -1);
    int o = 0;
    std::vector<bool> raxes(r, false);
    for (int a = 0; a < x.type.ndim(); ++a) {
      if (a != arg->axis()) {
        xm[a] = m[o];
      } else {
        if (xit == g_.map.end() || x.type.shape[a] == 1) return false;
        xm[a] = xit->second[a];
        if (xm[a] < 0) return false;
        raxes[xm[a]] = true;
      }
      if (a != arg->axis() || arg->keepdims()) ++o;
    }
    if (!set_inner(raxes)) return false;
    // The inner axes must be exactly the one reduced axis, so the index is the loop index.
    if (std::count(raxes.begin(), raxes.end(), true) != 1) return false;
    int xe = val(0, xm);
    if (xe < 0) return false;
    Expr e;
    e.kind = ExprKind::ArgReduce;
    e.args = {xe};
    e.dtype = Dtype::Int64;
    e.is_max = arg->is_max();
    e.axis = xm[arg->axis()];
    e.node = np;
    result = add_expr(e);
  } else if (dynamic_cast<const SizeOf*>(&op)) {
    result = value(np, m);  // the inlined form (a Count)
    if (result < 0) return false;
  } else if (dynamic_cast<const Softmax*>(&op) || dynamic_cast<const SoftmaxGrad*>(&op) ||
             dynamic_cast<const CrossentropySoftmax*>(&op)) {
    // Row ops over the last axis of their first input.
    const Node& x = *n.inputs[dynamic_cast<const SoftmaxGrad*>(&op) ? 1 : 0];
    const int last = x.type.ndim() - 1;
    std::vector<int> xm;
    auto xit = g_.map.find(&x);
    if (dynamic_cast<const CrossentropySoftmax*>(&op)) {
      // Output drops the last axis: inputs' map = output map + the row axis.
      if (xit == g_.map.end()) return false;
      xm = xit->second;
      for (int a = 0; a < last; ++a)
        if (xm[a] != m[a] && x.type.shape[a] != 1) return false;
    } else {
      xm = m;
    }
    if (x.type.shape[last] == 1 || xm[last] < 0) return false;
    std::vector<bool> raxes(r, false);
    raxes[xm[last]] = true;
    if (!set_inner(raxes)) return false;
    const Dtype dt = x.type.dtype;
    auto sub = [&](int a, int b) { return scalar(ScalarOp::Sub, {a, b}, dt, dt); };
    auto mul = [&](int a, int b) { return scalar(ScalarOp::Mul, {a, b}, dt, dt); };
    if (dynamic_cast<const SoftmaxGrad*>(&op)) {
      int g = val(0, xm), sm = val(1, xm);
      if (g < 0 || sm < 0) return false;
      int t = cast_to(reduce(ReduceKind::Sum, mul(g, sm), dt, false), dt);
      result = scalar(ScalarOp::Mul, {sm, sub(g, t)}, dt, dt, np);
    } else {
      int z = val(0, xm);
      if (z < 0) return false;
      int mx = reduce(ReduceKind::Max, z, dt, false);
      int sh = sub(z, mx);
      int ex = scalar(ScalarOp::Exp, {sh}, dt, dt);
      int s = cast_to(reduce(ReduceKind::Sum, ex, dt, false), dt);
      if (auto* sm = dynamic_cast<const Softmax*>(&op)) {
        if (sm->log())
          result = scalar(ScalarOp::Sub, {sh, scalar(ScalarOp::Log, {s}, dt, dt)}, dt, dt, np);
        else
          result = scalar(ScalarOp::Div, {ex, s}, dt, dt, np);
      } else {
        int y = val(1, xm);
        if (y < 0) return false;
        y = cast_to(y, dt);
        // sum_j y_j * (logsumexp - z_j) = sum_j y_j * (log(s) - (z_j - max))
        int lse_shift = scalar(ScalarOp::Log, {s}, dt, dt);
        int term = mul(y, sub(lse_shift, sh));
        result = cast_to(reduce(ReduceKind::Sum, term, dt, false), n.type.dtype);
        g_.lk.exprs[result].node = np;
      }
    }
  } else {
    return false;
  }
  g_.expr_of[&n] = result;
  g_.map[&n] = m;
  return true;
}

bool Builder::add(const NodePtr& n, bool seed) {
  const Node& node = *n;
  std::vector<int> m;
  if (seed) {
    // The domain: the output's shape, or the input's for reductions and row ops.
    const Node* dom = &node;
    if (dynamic_cast<const Reduce*>(node.op.get()) ||
        dynamic_cast<const ArgReduce*>(node.op.get()) ||
        dynamic_cast<const CrossentropySoftmax*>(node.op.get()))
      dom = node.inputs[0].get();
    g_.lk.domain = env_.dims.dims(dom);
    g_.lk.inner.assign(g_.lk.domain.size(), false);
    if (dom != &node) {
      // Seed the input's map so the reduction knows which axes it reduces.
      const NodePtr& x = node.inputs[0];
      if (!g_.map.count(x.get())) g_.map[x.get()] = identity_map(x->type.ndim());
      // The input itself is external: loads go through its buffer.
      if (auto* red = dynamic_cast<const Reduce*>(node.op.get())) {
        std::vector<bool> reduced(x->type.ndim(), red->axes().empty());
        for (int a : red->axes()) reduced[a] = true;
        for (int a = 0; a < x->type.ndim(); ++a)
          if (!reduced[a] || red->keepdims()) m.push_back(reduced[a] ? -1 : a);
      } else if (auto* arg = dynamic_cast<const ArgReduce*>(node.op.get())) {
        for (int a = 0; a < x->type.ndim(); ++a)
          if (a != arg->axis() || arg->keepdims()) m.push_back(a == arg->axis() ? -1 : a);
      } else {
        for (int a = 0; a + 1 < x->type.ndim(); ++a) m.push_back(a);
      }
      for (int a = 0; a < node.type.ndim(); ++a)
        if (node.type.shape[a] == 1) m[a] = -1;
    } else {
      m = identity_map(node.type.ndim());
      for (int a = 0; a < node.type.ndim(); ++a)
        if (node.type.shape[a] == 1) m[a] = -1;
    }
  } else {
    if (auto* ds = dynamic_cast<const DimShuffle*>(node.op.get())) {
      auto it = g_.map.find(node.inputs[0].get());
      if (it == g_.map.end()) return false;
      m.assign(ds->pattern().size(), -1);
      for (std::size_t k = 0; k < ds->pattern().size(); ++k)
        if (ds->pattern()[k] >= 0) m[k] = it->second[ds->pattern()[k]];
    } else if (dynamic_cast<const Reduce*>(node.op.get()) ||
               dynamic_cast<const ArgReduce*>(node.op.get()) ||
               dynamic_cast<const CrossentropySoftmax*>(node.op.get())) {
      auto it = g_.map.find(node.inputs[0].get());
      if (it == g_.map.end()) {
        // A sibling reading the same external value: its axes are the domain's when its
        // dims are.
        const Node* x = node.inputs[0].get();
        if (env_.dims.dims(x) != g_.lk.domain) return false;
        std::vector<int> xm = identity_map(x->type.ndim());
        for (int a = 0; a < x->type.ndim(); ++a)
          if (x->type.shape[a] == 1) xm[a] = -1;
        it = g_.map.emplace(x, xm).first;
      }
      const auto& xm = it->second;
      const Node& x = *node.inputs[0];
      if (auto* red = dynamic_cast<const Reduce*>(node.op.get())) {
        std::vector<bool> reduced(x.type.ndim(), red->axes().empty());
        for (int a : red->axes()) reduced[a] = true;
        for (int a = 0; a < x.type.ndim(); ++a)
          if (!reduced[a] || red->keepdims()) m.push_back(reduced[a] ? -1 : xm[a]);
      } else if (auto* arg = dynamic_cast<const ArgReduce*>(node.op.get())) {
        for (int a = 0; a < x.type.ndim(); ++a)
          if (a != arg->axis() || arg->keepdims()) m.push_back(a == arg->axis() ? -1 : xm[a]);
      } else {
        for (int a = 0; a + 1 < x.type.ndim(); ++a) m.push_back(xm[a]);
      }
      for (int a = 0; a < node.type.ndim(); ++a)
        if (node.type.shape[a] == 1) m[a] = -1;
    } else if (!output_map(node, &m)) {
      return false;
    }
  }
  if (!map_fits(node, m)) return false;
  if (!lower(n, m) || !covers_its_level(m)) return false;  // after lower: it sets inner axes
  g_.nodes.push_back(n);
  return true;
}

// A value is computed once per point of the loop levels it varies along, so it must vary
// along every non-unit axis of its level: all of them, all outer ones (a per-row value), or
// none. Otherwise it would be computed zero times when a skipped axis is empty (a (1, 2)
// result next to a (0, 1, 2) one), or repeatedly, racing with in-place writes, when not.
bool Builder::covers_its_level(const std::vector<int>& m) const {
  const std::vector<bool> v = varies(m, rank());
  bool any = false, all = true, all_outer = true, any_inner = false;
  for (int d = 0; d < rank(); ++d) {
    const Dim& dim = g_.lk.domain[d];
    if (dim.is_static() && dim.size == 1) continue;
    any = any || v[d];
    all = all && v[d];
    if (g_.inner_set && g_.lk.inner[d])
      any_inner = any_inner || v[d];
    else
      all_outer = all_outer && v[d];
  }
  if (!any || all) return true;
  return g_.inner_set && !any_inner && all_outer;
}

// ---------------------------------------------------------------------------------------
// Levels and passes of a finished loop kernel.
// ---------------------------------------------------------------------------------------

// Returns false when the group is not a valid single kernel (a final reduction feeding the
// loop, or a reduction over part of the iteration).
bool assign_levels(LoopKernel& lk) {
  const int r = static_cast<int>(lk.domain.size());
  std::vector<bool> inner = lk.inner;
  bool has_inner = std::find(inner.begin(), inner.end(), true) != inner.end();
  // varying axes of each expression
  std::vector<std::vector<bool>> var(lk.exprs.size(), std::vector<bool>(r, false));
  std::vector<bool> post(lk.exprs.size(), false);  // depends on a final reduction
  for (std::size_t i = 0; i < lk.exprs.size(); ++i) {
    Expr& e = lk.exprs[i];
    auto& v = var[i];
    switch (e.kind) {
      case ExprKind::Load:
        for (int d = 0; d < r; ++d) v[d] = lk.accesses[e.access].axis_of[d] >= 0;
        break;
      case ExprKind::Index:
        v[e.axis] = true;
        break;
      case ExprKind::Const:
      case ExprKind::Count:
        break;
      case ExprKind::Scalar:
        for (int a : e.args) {
          for (int d = 0; d < r; ++d) v[d] = v[d] || var[a][d];
          post[i] = post[i] || post[a];
        }
        break;
      case ExprKind::Reduce:
      case ExprKind::ArgReduce: {
        const auto& av = var[e.args[0]];
        if (post[e.args[0]]) return false;
        if (e.final) {
          post[i] = true;
          // Must cover every point exactly once: the input varies over all outer axes
          // (and all inner ones when it is an inner value).
          bool inner_val = false;
          for (int d = 0; d < r; ++d) inner_val = inner_val || (inner[d] && av[d]);
          // (A static size-1 axis has one point: a value need not vary along it.)
          for (int d = 0; d < r; ++d) {
            const bool single = lk.domain[d].is_static() && lk.domain[d].size == 1;
            if (!inner[d] && !av[d] && !single) return false;
            if (inner[d] && inner_val && !av[d] && !single) return false;
          }
          if (!inner_val && has_inner) {
            // Accumulated once per outer point: fine.
          }
        } else {
          for (int d = 0; d < r; ++d) v[d] = av[d] && !inner[d];
        }
        break;
      }
    }
    bool any_inner = false, any_outer = false;
    for (int d = 0; d < r; ++d) {
      if (!v[d]) continue;
      (inner[d] ? any_inner : any_outer) = true;
    }
    // A value computed from a per-outer-point value (a row's max) is per outer point too,
    // even when it varies along no axis (a 1-d domain reduced whole).
    int arg_level = 0;
    if (e.kind == ExprKind::Scalar)
      for (int a : e.args) arg_level = std::max(arg_level, lk.exprs[a].level);
    if (post[i]) {
      if (any_inner || any_outer || arg_level == 1 || arg_level == 2) return false;
      e.level = 3;
    } else if (any_inner || arg_level == 2) {
      e.level = 2;
    } else if (any_outer || arg_level == 1 || (e.kind == ExprKind::Reduce && !e.final) ||
               e.kind == ExprKind::ArgReduce) {
      e.level = 1;
    } else {
      e.level = 0;
    }
    // A final reduction's result is known after the loop.
    if (e.kind == ExprKind::Reduce && e.final) e.level = 3;
  }
  // Passes: an inner value's pass is the max over its inner args' passes and the passes
  // after which its outer args are known.
  int passes = 1;
  for (std::size_t i = 0; i < lk.exprs.size(); ++i) {
    Expr& e = lk.exprs[i];
    int p = 0;
    for (std::size_t ai = 0; ai < e.args.size(); ++ai) {
      // second's x sets its level, never when it is known. Otherwise the gradient's constant
      // 1/n would wait for the cost's pass: a whole extra sweep of each row in the tutorial's
      // softmax gradient.
      if (!e.reads_arg(ai)) continue;
      const Expr& x = lk.exprs[e.args[ai]];
      if (x.level == 1 || x.level == 2) p = std::max(p, x.phase);
    }
    if ((e.kind == ExprKind::Reduce && !e.final) || e.kind == ExprKind::ArgReduce) {
      // Accumulated during the pass of its input, known after it.
      p = lk.exprs[e.args[0]].level == 2 ? lk.exprs[e.args[0]].phase + 1
                                         : lk.exprs[e.args[0]].phase;
    }
    e.phase = p;
    if (e.level == 2) passes = std::max(passes, p + 1);
  }
  lk.passes = has_inner ? passes : 1;
  return true;
}

// ---------------------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------------------

int new_buffer(Env& env, BufferKind kind, const NodePtr& node) {
  Buffer b;
  b.id = static_cast<int>(env.sched.buffers.size());
  b.kind = kind;
  b.node = node;
  b.dtype = node->type.dtype;
  b.dims = env.dims.dims(node.get());
  env.sched.buffers.push_back(b);
  return b.id;
}

int new_kernel(Env& env, KernelKind kind, const std::string& what) {
  Kernel k;
  k.kind = kind;
  k.name = what;
  env.sched.kernels.push_back(std::move(k));
  env.deps.emplace_back();
  return static_cast<int>(env.sched.kernels.size()) - 1;
}

int buffer_for(Env& env, const NodePtr& n);
void schedule_host(Env& env, const NodePtr& n);
bool dense_buffer(const Schedule& s, int b);

// Materializes a scalar-like inlinable value (an output, a gemm scalar, a host input).
int materialize_scalar(Env& env, const NodePtr& n) {
  int k = new_kernel(env, KernelKind::Loop, "scalar");
  Group g;
  g.kernel = k;
  Builder b(env, g);
  g.lk.domain = {};
  g.lk.inner = {};
  int out = new_buffer(env, BufferKind::Temp, n);
  env.sched.buffers[out].producer = k;
  int e = Builder(env, g).add(n, true) ? g.expr_of.at(n.get()) : -1;
  if (e < 0) throw Error("schedule: cannot materialize " + n->describe());
  (void)b;
  Access acc;
  acc.buffer = out;
  g.lk.accesses.push_back(acc);
  g.lk.stores.push_back({e, static_cast<int>(g.lk.accesses.size()) - 1});
  if (!assign_levels(g.lk)) throw Error("schedule: bad scalar kernel for " + n->describe());
  Kernel& kr = env.sched.kernels[k];
  kr.loop = g.lk;
  kr.nodes = g.nodes;
  kr.writes = {out};
  env.buffer_of[n.get()] = out;
  env.producer_kernel[n.get()] = k;
  return out;
}

// The buffer holding value n (it must already be computed by a kernel, or be a leaf or
// view of one).
int buffer_for(Env& env, const NodePtr& n) {
  auto it = env.buffer_of.find(n.get());
  if (it != env.buffer_of.end()) return it->second;
  int id = -1;
  switch (n->kind) {
    case NodeKind::Input: {
      id = new_buffer(env, BufferKind::Input, n);
      const auto& ins = env.fg.inputs();
      for (std::size_t i = 0; i < ins.size(); ++i)
        if (ins[i] == n) env.sched.buffers[id].input = static_cast<int>(i);
      break;
    }
    case NodeKind::Shared:
      id = new_buffer(env, BufferKind::Shared, n);
      break;
    case NodeKind::Constant:
      id = new_buffer(env, BufferKind::Constant, n);
      break;
    case NodeKind::Apply: {
      std::vector<int> vm;
      if (view_map(*n, &vm)) {
        int base = buffer_for(env, n->inputs[0]);
        id = new_buffer(env, BufferKind::View, n);
        env.sched.buffers[id].base = base;
        env.sched.buffers[id].axis_map = vm;
      } else if (dynamic_cast<const Reshape*>(n->op.get()) && n->inputs.size() == 1) {
        int base = buffer_for(env, n->inputs[0]);
        // Only a dense base can be reinterpreted; a permuted one is copied by a host step.
        if (!dense_buffer(env.sched, base)) {
          schedule_host(env, n);
          return env.buffer_of.at(n.get());
        }
        id = new_buffer(env, BufferKind::View, n);
        env.sched.buffers[id].base = base;
        env.sched.buffers[id].reinterpret = true;
      } else if (env.inlinable(*n)) {
        return materialize_scalar(env, n);
      } else {
        throw Error("schedule: value " + n->describe() + " is used before it is computed");
      }
      break;
    }
  }
  env.buffer_of[n.get()] = id;
  return id;
}

// Whether a buffer's elements are in row-major order of its dims (views that only move
// size-1 axes, reinterpretations of dense buffers, and everything that is not a view).
bool dense_buffer(const Schedule& s, int b) {
  const Buffer& x = s.buffers[b];
  if (x.kind != BufferKind::View) return true;
  if (x.reinterpret) return dense_buffer(s, x.base);
  std::vector<int> kept;
  for (int a : x.axis_map)
    if (a >= 0) kept.push_back(a);
  return std::is_sorted(kept.begin(), kept.end()) && dense_buffer(s, x.base);
}

// The buffer a loop kernel reads value v from: a leaf, a kernel's output, a view, or the
// (future) store of another group's value.
int external_buffer(Env& env, const NodePtr& v) {
  auto it = env.buffer_of.find(v.get());
  if (it != env.buffer_of.end()) return it->second;
  auto git = env.group_of.find(v.get());
  if (git != env.group_of.end()) {
    int b = new_buffer(env, BufferKind::Temp, v);
    env.sched.buffers[b].producer = env.groups[git->second].kernel;
    env.buffer_of[v.get()] = b;
    return b;
  }
  return buffer_for(env, v);
}

// Root buffer (the storage owner) of a buffer.
int root_of(const Schedule& s, int b) {
  while (s.buffers[b].kind == BufferKind::View) b = s.buffers[b].base;
  return b;
}

void add_dep(Env& env, int kernel, int buffer) {
  int r = root_of(env.sched, buffer);
  int p = env.sched.buffers[r].producer;
  if (p >= 0 && p != kernel) env.deps[kernel].insert(p);
}

// Whether kernel `from` transitively depends on kernel `to`.
bool depends_on(const Env& env, int from, int to) {
  std::vector<int> stack{from};
  std::unordered_set<int> seen;
  while (!stack.empty()) {
    int k = stack.back();
    stack.pop_back();
    if (k == to) return true;
    if (!seen.insert(k).second) continue;
    for (int d : env.deps[k]) stack.push_back(d);
  }
  return false;
}

// Host step: op->perform on materialized inputs.
void schedule_host(Env& env, const NodePtr& n) {
  int k = new_kernel(env, KernelKind::Host, "host");
  Kernel& kr = env.sched.kernels[k];
  kr.nodes = {n};
  kr.host.node = n;
  for (const NodePtr& in : n->inputs) {
    int b = external_buffer(env, in);
    env.sched.kernels[k].host.inputs.push_back(b);
    env.sched.kernels[k].reads.push_back(b);
    add_dep(env, k, b);
  }
  int out = new_buffer(env, BufferKind::Temp, n);
  env.sched.buffers[out].producer = k;
  env.sched.kernels[k].host.out = out;
  env.sched.kernels[k].writes = {out};
  env.buffer_of[n.get()] = out;
  env.producer_kernel[n.get()] = k;
}

// A 2-d operand of a product: the buffer, with `trans` toggled when it is a transposed view.
int gemm_operand(Env& env, const NodePtr& v, bool* trans) {
  NodePtr x = v;
  if (!env.buffer_of.count(x.get())) {
    if (auto* ds = dynamic_cast<const DimShuffle*>(x->op.get());
        ds && x->type.ndim() == 2 && ds->pattern() == std::vector<int>{1, 0}) {
      *trans = !*trans;
      x = x->inputs[0];
    }
  }
  int b = external_buffer(env, x);
  if (b < 0 || !dense_buffer(env.sched, b)) return -1;
  return b;
}

ScalarArg scalar_arg(Env& env, const NodePtr& v) {
  if (is_scalar_constant(*v)) return {true, v->value.item<double>(), -1};
  int b = external_buffer(env, v);
  return {false, 0, b};
}

bool schedule_gemm(Env& env, const NodePtr& n) {
  GemmKernel gk;
  gk.dtype = n->type.dtype;
  if (!is_float(gk.dtype) && gk.dtype != Dtype::Int32 && gk.dtype != Dtype::Int64) return false;
  NodePtr a, b;
  if (dynamic_cast<const Dot*>(n->op.get())) {
    a = n->inputs[0];
    b = n->inputs[1];
    if (a->type.dtype != gk.dtype || b->type.dtype != gk.dtype) return false;
    gk.a_vector = a->type.ndim() == 1;
    gk.b_vector = b->type.ndim() == 1;
  } else if (auto* g = dynamic_cast<const Gemm*>(n->op.get())) {
    a = n->inputs[Gemm::kA];
    b = n->inputs[Gemm::kB];
    gk.trans_a = g->trans_a();
    gk.trans_b = g->trans_b();
    for (const NodePtr& in : n->inputs)
      if (in->type.dtype != gk.dtype) return false;
  } else {
    return false;
  }
  // Resolve operands before creating the kernel (they may need scalar kernels).
  bool ta = gk.trans_a, tb = gk.trans_b;
  int ab = gk.a_vector ? external_buffer(env, a) : gemm_operand(env, a, &ta);
  int bb = gk.b_vector ? external_buffer(env, b) : gemm_operand(env, b, &tb);
  if (gk.a_vector && ab >= 0 && !dense_buffer(env.sched, ab)) ab = -1;
  if (gk.b_vector && bb >= 0 && !dense_buffer(env.sched, bb)) bb = -1;
  if (ab < 0 || bb < 0) return false;
  gk.trans_a = ta;
  gk.trans_b = tb;
  gk.a = ab;
  gk.b = bb;
  if (auto* g = dynamic_cast<const Gemm*>(n->op.get())) {
    gk.alpha = scalar_arg(env, n->inputs[Gemm::kAlpha]);
    if (g->accumulate()) {
      gk.c_in = external_buffer(env, n->inputs[Gemm::kC]);
      if (gk.c_in < 0 || !dense_buffer(env.sched, gk.c_in)) return false;
      gk.beta = scalar_arg(env, n->inputs[Gemm::kBeta]);
    }
  }
  const Node* an = env.sched.buffers[ab].node.get();
  const Node* bn = env.sched.buffers[bb].node.get();
  if (gk.a_vector) {
    gk.m = {1, -1};
    gk.k = env.dims.dim(an, 0);
  } else {
    gk.m = env.dims.dim(an, gk.trans_a ? 1 : 0);
    gk.k = env.dims.dim(an, gk.trans_a ? 0 : 1);
  }
  gk.n = gk.b_vector ? Dim{1, -1} : env.dims.dim(bn, gk.trans_b ? 0 : 1);
  int k = new_kernel(env, KernelKind::Gemm, "gemm");
  Kernel& kr = env.sched.kernels[k];
  kr.nodes = {n};
  for (int rb : {gk.a, gk.b, gk.c_in, gk.alpha.buffer, gk.beta.buffer}) {
    if (rb < 0) continue;
    kr.reads.push_back(rb);
    add_dep(env, k, rb);
  }
  int out = new_buffer(env, BufferKind::Temp, n);
  env.sched.buffers[out].producer = k;
  gk.out = out;
  env.sched.kernels[k].gemm = gk;
  env.sched.kernels[k].writes = {out};
  env.buffer_of[n.get()] = out;
  env.producer_kernel[n.get()] = k;
  return true;
}

// Values of a group that must be stored: used outside it, or outputs/updates.
std::vector<NodePtr> group_outputs(Env& env, const Group& g) {
  std::unordered_set<const Node*> in_group;
  for (const NodePtr& n : g.nodes) in_group.insert(n.get());
  std::vector<NodePtr> outs;
  for (const NodePtr& n : g.nodes) {
    bool needed = env.roots.count(n.get()) > 0;
    for (const NodePtr& c : env.clients[n.get()]) {
      // Recomputed scalars (size_of, 1/n) read no data: where they need a value they
      // create its buffer on demand.
      if (env.inlinable(*c) && !env.roots.count(c.get())) continue;
      if (!in_group.count(c.get())) needed = true;
    }
    if (needed) outs.push_back(n);
  }
  return outs;
}

// A trial group is valid when it is one loop nest (levels and passes can be assigned), it
// reads nothing its own kernel writes and none of the kernels it reads from depends on it.
bool acyclic(Env& env, const Group& g) {
  LoopKernel probe = g.lk;
  if (!assign_levels(probe)) return false;
  for (const Access& a : g.lk.accesses) {
    int p = env.sched.buffers[root_of(env.sched, a.buffer)].producer;
    if (p < 0) continue;
    if (p == g.kernel || depends_on(env, p, g.kernel)) return false;
  }
  return true;
}

void commit(Env& env, int gi, Group& trial, const NodePtr& n) {
  if (&env.groups[gi] != &trial) env.groups[gi] = std::move(trial);
  Group& g = env.groups[gi];
  env.group_of[n.get()] = gi;
  env.producer_kernel[n.get()] = g.kernel;
  for (const Access& a : g.lk.accesses) add_dep(env, g.kernel, a.buffer);
}

// Puts a loop op into a fused group: the group of one of its inputs, else a group that
// already reads one of its inputs (siblings: softmax(z) next to crossentropy(z, y)), else a
// new group.
bool try_join(Env& env, const NodePtr& n) {
  if (env.options.fuse) {
    std::vector<int> cands;
    for (const NodePtr& in : n->inputs) {
      auto git = env.group_of.find(in.get());
      if (git != env.group_of.end()) cands.push_back(git->second);
    }
    std::sort(cands.rbegin(), cands.rend());
    if (cands.empty()) {
      for (int gi = static_cast<int>(env.groups.size()) - 1; gi >= 0 && cands.size() < 4; --gi)
        for (const NodePtr& in : n->inputs)
          if (env.groups[gi].externals.count(in.get())) {
            cands.push_back(gi);
            break;
          }
    }
    cands.erase(std::unique(cands.begin(), cands.end()), cands.end());
    for (int gi : cands) {
      Group trial = env.groups[gi];
      if (Builder(env, trial).add(n, false) && acyclic(env, trial)) {
        commit(env, gi, trial, n);
        return true;
      }
    }
  }
  Group g;
  g.kernel = new_kernel(env, KernelKind::Loop, "loop");
  if (!Builder(env, g).add(n, true) || !acyclic(env, g)) {
    env.sched.kernels[g.kernel].name = "unused";
    return false;
  }
  env.groups.push_back(std::move(g));
  commit(env, static_cast<int>(env.groups.size()) - 1, env.groups.back(), n);
  return true;
}

// Whether loop kernel `lk` only works row by row on the rows of product `g`'s output: its
// outer axis is exactly those rows, every read of the product is at the current row, and it
// writes nothing the products read.
bool row_local_epilogue(const Schedule& s, const GemmKernel& g, const Kernel& loop,
                        const std::vector<int>& product_inputs) {
  const LoopKernel& lk = loop.loop;
  if (lk.domain.size() != 2 || lk.inner[0] || !lk.inner[1] || lk.domain[0] != g.m) return false;
  for (const Access& a : lk.accesses) {
    const int root = root_of(s, a.buffer);
    if (root == root_of(s, g.out) && (a.buffer != g.out || a.axis_of != std::vector<int>{0, 1}))
      return false;
  }
  for (int w : loop.writes)
    for (int b : product_inputs)
      if (root_of(s, w) == root_of(s, b)) return false;
  return true;
}

// Whether kernel `x` reads a buffer whose storage one of `writers` writes.
bool reads_from(const Schedule& s, const Kernel& x, const std::vector<const Kernel*>& writers) {
  for (int r : x.reads)
    for (const Kernel* w : writers)
      for (int b : w->writes)
        if (root_of(s, r) == root_of(s, b)) return true;
  return false;
}

// Makes the members of would-be row chains adjacent in `order` (kernel ids in execution
// order): kernels scheduled between a product and the row loop reading it (or between that
// loop and the product reducing its output), that neither depend on the members nor write
// what the members read, move to just before the product. The training step with its
// minibatch sliced on the device (trY's slice lands between the product and the loop) is
// the case this is for.
void gather_row_chains(const Schedule& s, std::vector<int>& order) {
  auto kernel = [&](int pos) -> const Kernel& { return s.kernels[order[pos]]; };
  for (std::size_t g = 0; g < order.size(); ++g) {
    if (kernel(g).kind != KernelKind::Gemm || kernel(g).gemm.trans_a) continue;
    std::vector<const Kernel*> members = {&kernel(g)};
    std::vector<int> moved, kept = {order[g]};
    bool found_loop = false;
    std::size_t p = g + 1;
    for (; p < order.size(); ++p) {
      const Kernel& x = kernel(p);
      const bool is_loop = x.kind == KernelKind::Loop;
      const bool is_tail = x.kind == KernelKind::Gemm && x.gemm.trans_a;
      if ((is_loop && !found_loop) || (is_tail && found_loop)) {
        if (reads_from(s, x, members)) {
          members.push_back(&x);
          kept.push_back(order[p]);
          if (is_tail) break;
          found_loop = true;
          continue;
        }
      }
      // Anything else between members: movable before the product when independent of them.
      bool writes_member_input = false;
      for (const Kernel* m : members)
        if (reads_from(s, *m, {&x})) writes_member_input = true;
      if (reads_from(s, x, members) || writes_member_input) break;
      moved.push_back(order[p]);
    }
    if (!found_loop || moved.empty()) continue;
    // Later kernels keep their order; the chain's span [g, p] becomes moved + members.
    const std::size_t end = std::min(p, order.size() - 1);
    std::vector<int> span = moved;
    span.insert(span.end(), kept.begin(), kept.end());
    // Kernels in [g, end] neither moved nor members (a dependent kernel that stopped the
    // search) stay after the members.
    for (std::size_t q = g; q <= end; ++q)
      if (std::find(span.begin(), span.end(), order[q]) == span.end()) span.push_back(order[q]);
    std::copy(span.begin(), span.end(), order.begin() + static_cast<std::ptrdiff_t>(g));
    g += moved.size();
  }
}

std::vector<RowChain> find_row_chains(const Schedule& s) {
  std::vector<RowChain> chains;
  const int nk = static_cast<int>(s.kernels.size());
  for (int k = 0; k + 1 < nk; ++k) {
    const Kernel& head = s.kernels[k];
    const Kernel& loop = s.kernels[k + 1];
    if (head.kind != KernelKind::Gemm || loop.kind != KernelKind::Loop) continue;
    const GemmKernel& g = head.gemm;
    if (g.trans_a || g.a_vector || g.b_vector || g.c_in >= 0 || !is_float(g.dtype)) continue;
    if (s.buffers[g.a].dims.size() != 2 || s.buffers[g.out].dims.size() != 2) continue;
    std::vector<int> inputs = {g.a, g.b};
    RowChain c{k, k + 1, -1};
    if (k + 2 < nk && s.kernels[k + 2].kind == KernelKind::Gemm) {
      const GemmKernel& t = s.kernels[k + 2].gemm;
      // D: written by the loop, read densely by rows; A: the very same rows of the same buffer.
      const bool fits = t.trans_a && !t.trans_b && !t.a_vector && !t.b_vector && t.a == g.a &&
                        t.dtype == g.dtype && t.k == g.m && t.m == g.k &&
                        s.buffers[t.b].kind == BufferKind::Temp &&
                        s.buffers[t.b].producer == k + 1 && s.buffers[t.b].dims.size() == 2;
      std::vector<int> all = inputs;
      if (t.c_in >= 0) all.push_back(t.c_in);
      if (fits && row_local_epilogue(s, g, loop, all)) {
        c.reduce_gemm = k + 2;
        inputs = all;
      }
    }
    if (!row_local_epilogue(s, g, loop, inputs)) continue;
    chains.push_back(c);
    k = c.reduce_gemm >= 0 ? c.reduce_gemm : c.loop;
  }
  return chains;
}

}  // namespace

Schedule make_schedule(const FunctionGraph& fg, const ScheduleOptions& options) {
  std::vector<NodePtr> order = fg.toposort();
  // Leaves the outputs do not reach still get buffers: inputs replaced through givens and
  // update targets that nothing reads.
  std::vector<NodePtr> all = order;
  {
    std::unordered_set<const Node*> seen;
    for (const NodePtr& n : order) seen.insert(n.get());
    for (const NodePtr& n : fg.inputs())
      if (seen.insert(n.get()).second) all.push_back(n);
    for (const UpdatePair& u : fg.updates())
      if (seen.insert(u.target.get()).second) all.push_back(u.target);
  }
  Env env(fg, options, all);
  env.sched.num_syms = env.dims.num_syms();
  env.sched.sym_sources = env.dims.sources();
  for (const NodePtr& n : order) env.sched.node_dims.emplace_back(n, env.dims.dims(n.get()));
  for (const NodePtr& n : order)
    for (const NodePtr& in : n->inputs) env.clients[in.get()].push_back(n);
  for (const NodePtr& r : fg.outputs()) env.roots.insert(r.get());
  for (const UpdatePair& u : fg.updates()) env.roots.insert(u.value.get());
  // A value read by a non-loop consumer through a view is materialized by its group.
  for (const NodePtr& n : fg.inputs()) buffer_for(env, n);

  // Pass 1: form loop groups greedily in topological order; schedule gemm and host steps.
  // Group kernels are created when the group is opened; their bodies are built at the end.
  std::vector<int> open_groups;
  for (const NodePtr& n : order) {
    if (n->kind != NodeKind::Apply) continue;
    std::vector<int> vm;
    if (env.inlinable(*n) && !env.roots.count(n.get())) continue;  // recomputed where used
    if (view_map(*n, &vm)) {
      // An axis view: loop kernels read through it; others get a view buffer on demand.
      auto git = env.group_of.find(n->inputs[0].get());
      if (git != env.group_of.end() && options.fuse) {
        Group trial = env.groups[git->second];
        if (Builder(env, trial).add(n, false) && acyclic(env, trial))
          commit(env, git->second, trial, n);
      }
      continue;
    }
    if (is_loop_op(*n) && try_join(env, n)) continue;
    // Everything the loop groups produced so far that this node reads must be stored.
    for (const NodePtr& in : n->inputs) {
      auto git = env.group_of.find(in.get());
      if (git != env.group_of.end()) env.roots.insert(in.get());
    }
    // Non-loop consumers need their loop-produced inputs in buffers now: create them.
    for (const NodePtr& in : n->inputs) {
      NodePtr v = in;
      std::vector<int> vvm;
      while (!env.group_of.count(v.get()) && view_map(*v, &vvm) && v->kind == NodeKind::Apply)
        v = v->inputs[0];
      auto git = env.group_of.find(v.get());
      if (git != env.group_of.end() && !env.buffer_of.count(v.get())) {
        int b = new_buffer(env, BufferKind::Temp, v);
        env.sched.buffers[b].producer = env.groups[git->second].kernel;
        env.buffer_of[v.get()] = b;
        env.roots.insert(v.get());
      }
    }
    if (options.use_gemm && schedule_gemm(env, n)) continue;
    schedule_host(env, n);
  }

  // Roots computed by groups, views of group values and loop values read by later groups
  // all need buffers.
  for (Group& g : env.groups)
    for (const NodePtr& v : group_outputs(env, g)) external_buffer(env, v);

  // Pass 2: each group stores the values others need; then levels and passes.
  for (Group& g : env.groups) {
    for (const NodePtr& v : g.nodes) {
      auto bit = env.buffer_of.find(v.get());
      if (bit == env.buffer_of.end()) continue;
      Buffer& b = env.sched.buffers[bit->second];
      if (b.kind != BufferKind::Temp || b.producer != g.kernel) continue;
      Access acc;
      acc.buffer = bit->second;
      acc.axis_of.assign(g.lk.domain.size(), -1);
      const auto& m = g.map.at(v.get());
      for (int a = 0; a < static_cast<int>(m.size()); ++a)
        if (m[a] >= 0) acc.axis_of[m[a]] = a;
      g.lk.accesses.push_back(acc);
      g.lk.stores.push_back({g.expr_of.at(v.get()), static_cast<int>(g.lk.accesses.size()) - 1});
    }
    if (!assign_levels(g.lk))
      throw Error("schedule: a fused group mixes a whole-array reduction with its consumers");
    Kernel& k = env.sched.kernels[g.kernel];
    k.loop = std::move(g.lk);
    k.nodes = g.nodes;
    for (const Access& a : k.loop.accesses) {
      bool written = false;
      for (const Store& st : k.loop.stores)
        if (k.loop.accesses[st.access].buffer == a.buffer) written = true;
      auto& list = written ? k.writes : k.reads;
      if (std::find(list.begin(), list.end(), a.buffer) == list.end()) list.push_back(a.buffer);
      if (!written) add_dep(env, g.kernel, a.buffer);
    }
  }

  // Outputs and updates.
  for (const NodePtr& o : fg.outputs()) env.sched.outputs.push_back(buffer_for(env, o));
  for (const UpdatePair& u : fg.updates()) {
    env.sched.update_targets.push_back(buffer_for(env, u.target));
    env.sched.update_values.push_back(buffer_for(env, u.value));
  }

  // Order kernels: topological over dependencies, stable in creation order; drop unused.
  const int nk = static_cast<int>(env.sched.kernels.size());
  std::vector<int> state(nk, 0), order_k;
  std::function<void(int)> visit = [&](int k) {
    if (state[k] == 2) return;
    if (state[k] == 1) throw Error("schedule: internal error: kernel dependency cycle");
    state[k] = 1;
    std::vector<int> ds(env.deps[k].begin(), env.deps[k].end());
    std::sort(ds.begin(), ds.end());
    for (int d : ds) visit(d);
    state[k] = 2;
    order_k.push_back(k);
  };
  for (int k = 0; k < nk; ++k)
    if (env.sched.kernels[k].name != "unused") visit(k);
  gather_row_chains(env.sched, order_k);
  std::vector<int> new_index(nk, -1);
  std::vector<Kernel> kernels;
  for (int k : order_k) {
    if (env.sched.kernels[k].name == "unused") continue;
    new_index[k] = static_cast<int>(kernels.size());
    kernels.push_back(std::move(env.sched.kernels[k]));
  }
  for (Buffer& b : env.sched.buffers)
    if (b.producer >= 0) b.producer = new_index[b.producer];
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    const char* kind = kernels[i].kind == KernelKind::Loop   ? "loop"
                       : kernels[i].kind == KernelKind::Gemm ? "gemm"
                                                             : "host";
    kernels[i].name = "k" + std::to_string(i) + "_" + kind;
  }
  env.sched.kernels = std::move(kernels);
  env.sched.row_chains = find_row_chains(env.sched);
  return std::move(env.sched);
}

// ---------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------

namespace {

std::string buf_label(const Schedule& s, int b) {
  if (b < 0) return "-";
  const Buffer& x = s.buffers[b];
  std::string k = x.kind == BufferKind::Input      ? "in"
                  : x.kind == BufferKind::Shared   ? "shared"
                  : x.kind == BufferKind::Constant ? "const"
                  : x.kind == BufferKind::View     ? "view"
                                                   : "t";
  return "b" + std::to_string(b) + ":" + k + "(" + x.node->label() + ")";
}

}  // namespace

std::string describe_loop(const Schedule& s, const Kernel& k) {
  std::ostringstream os;
  const LoopKernel& lk = k.loop;
  os << "    domain " << dims_str(lk.domain) << " inner axes {";
  bool first = true;
  for (std::size_t d = 0; d < lk.inner.size(); ++d)
    if (lk.inner[d]) {
      os << (first ? "" : ",") << d;
      first = false;
    }
  os << "} passes " << lk.passes << (lk.has_final ? " +final" : "") << "\n";
  for (std::size_t i = 0; i < lk.exprs.size(); ++i) {
    const Expr& e = lk.exprs[i];
    os << "    e" << i << " L" << e.level << " p" << e.phase << " " << dtype_name(e.dtype) << " ";
    switch (e.kind) {
      case ExprKind::Load:
        os << "load " << buf_label(s, lk.accesses[e.access].buffer);
        break;
      case ExprKind::Const:
        os << "const " << e.value;
        break;
      case ExprKind::Scalar:
        os << scalar_info(e.op).name;
        break;
      case ExprKind::Reduce:
        os << (e.final ? "final_" : "") << reduce_kind_name(e.reduce);
        break;
      case ExprKind::ArgReduce:
        os << (e.is_max ? "argmax" : "argmin");
        break;
      case ExprKind::Index:
        os << "index " << e.axis;
        break;
      case ExprKind::Count:
        os << "count";
        break;
    }
    for (int a : e.args) os << " e" << a;
    os << "\n";
  }
  for (const Store& st : lk.stores)
    os << "    store e" << st.expr << " -> " << buf_label(s, lk.accesses[st.access].buffer) << "\n";
  return os.str();
}

std::string Schedule::describe() const {
  std::ostringstream os;
  for (const Kernel& k : kernels) {
    os << "  " << k.name << ":";
    for (const NodePtr& n : k.nodes) os << " " << n->op->str();
    os << "\n    reads";
    for (int b : k.reads) os << " " << buf_label(*this, b);
    os << "\n    writes";
    for (int b : k.writes) os << " " << buf_label(*this, b);
    os << "\n";
    if (k.kind == KernelKind::Gemm) {
      const GemmKernel& g = k.gemm;
      os << "    C"
         << "[" << dim_str(g.m) << "x" << dim_str(g.n) << "] = "
         << (g.alpha.is_const ? std::to_string(g.alpha.value) : buf_label(*this, g.alpha.buffer))
         << " * " << (g.trans_a ? "A^T" : "A") << " . " << (g.trans_b ? "B^T" : "B")
         << " (k=" << dim_str(g.k) << ")";
      if (g.c_in >= 0)
        os << " + "
           << (g.beta.is_const ? std::to_string(g.beta.value) : buf_label(*this, g.beta.buffer))
           << " * " << buf_label(*this, g.c_in);
      os << "\n";
    }
  }
  for (const RowChain& c : row_chains) {
    os << "  row chain: " << kernels[c.gemm].name << " + " << kernels[c.loop].name;
    if (c.reduce_gemm >= 0) os << " + " << kernels[c.reduce_gemm].name;
    os << " (one pass over the rows of " << buf_label(*this, kernels[c.gemm].gemm.a) << ")\n";
  }
  return os.str();
}

}  // namespace thea::sched
