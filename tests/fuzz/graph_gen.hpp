// Seeded, reproducible random graphs for differential testing of backends and rewrites.
// make_case(seed) builds a random DAG (elementwise ops of every dtype with broadcasting,
// reductions, dot, shape ops, slices with constant and symbolic bounds, take, softmax and
// cross-entropy patterns, shared variables with updates including the SGD gemm pattern)
// plus input values for 2-3 calls; compare_backends() compiles it under two
// FunctionOptions and compares every output and shared value after every call.
// Header-only so that every backend's test executable can use it (tests/fuzz/README.md).
//
// The generator tracks, for every value, its runtime shape, an interval bounding its
// elements and whether it is bit-identical on every backend ("stable"). Discontinuous ops
// (comparisons, sign, casts to integers, argmax) only read stable values, and domains are
// kept safe (log of abs(x) + c, divisions by |x| + c), so that any difference beyond the
// dtype's tolerance is a bug, not rounding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thea/ops/fused.hpp>
#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>
#include <utility>
#include <vector>

namespace thea::fuzz {

// Bump when a change alters the graph a seed produces: regression seeds are tied to it.
inline constexpr int kGeneratorVersion = 1;

// SplitMix64: the same stream on every platform (std distributions are not portable).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed ^ 0x5DEECE66Dull) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [lo, hi].
  std::int64_t range(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  int irange(int lo, int hi) { return static_cast<int>(range(lo, hi)); }
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(next() >> 11) * 0x1.0p-53);
  }
  bool chance(double p) { return uniform(0, 1) < p; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[next() % v.size()];
  }
  template <class T>
  T pick(std::initializer_list<T> v) {
    return *(v.begin() + next() % v.size());
  }
  // Index drawn with probability proportional to weights[i].
  std::size_t weighted(const std::vector<double>& weights) {
    double total = 0;
    for (double w : weights) total += w;
    double r = uniform(0, total);
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (r < weights[i]) return i;
      r -= weights[i];
    }
    return weights.size() - 1;
  }

 private:
  std::uint64_t state_;
};

// A generated graph with everything needed to run it.
struct FuzzCase {
  std::uint64_t seed = 0;
  int calls = 2;
  std::vector<Variable> inputs;
  std::vector<std::vector<Tensor>> call_inputs;  // [call][input]
  std::vector<Variable> outputs;
  std::vector<Shape> output_shapes;  // the generator's own expectation of each output shape
  std::vector<double> output_mags;   // bound on |element| of each output
  Updates updates;
  Givens givens;
  std::vector<Variable> shared;  // every shared variable the graph reads
  std::vector<Tensor> shared_init;
  std::vector<std::string> features;  // patterns the case exercises ("sgd_gemm", ...)
  std::vector<std::string> skipped;   // constructions the library refused (generator bugs)

  // Inputs (with call-0 values), shared variables, the user graph and the updates.
  std::string describe() const {
    std::ostringstream s;
    s << "fuzz case seed " << seed << " (generator v" << kGeneratorVersion << "), " << calls
      << " calls";
    if (!features.empty()) {
      s << ", features:";
      for (const std::string& f : features) s << ' ' << f;
    }
    s << "\ninputs:\n";
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      s << "  " << inputs[i].describe() << "\n";
      for (int c = 0; c < calls; ++c)
        s << "    call " << c << ": " << call_inputs[c][i].to_string(8) << "\n";
    }
    if (!shared.empty()) s << "shared variables (initial values):\n";
    for (std::size_t i = 0; i < shared.size(); ++i)
      s << "  " << shared[i].describe() << " = " << shared_init[i].to_string(8) << "\n";
    for (const auto& [from, to] : givens)
      s << "givens: " << from.describe() << " := " << to.describe() << "\n";
    std::vector<NodePtr> roots;
    for (const Variable& o : outputs) roots.push_back(o.node());
    s << "outputs:\n" << debugprint(roots);
    for (const auto& [target, value] : updates)
      s << "update " << target.name() << " <-\n" << debugprint(value);
    return s.str();
  }
};

struct GenOptions {
  int min_ops = 3;
  int max_ops = 14;
  int max_depth = 9;
  double p_model = 0.25;  // softmax-regression training step (grad, stabilize, gemm)
  double p_sgd = 0.2;     // w <- w - lr * dot(X.T, G) without grad
  double p_grad = 0.15;   // gradient of a random smooth scalar
  double p_alias = 0.12;  // w <- f(w, a view of w reading other positions)
  double p_big = 0.12;    // one large dimension (vector-loop tails, thread splits)
  bool huge = false;      // the large dimension is 1031..4099 (thread pools' split sizes)

  // THEA_FUZZ_MAX_OPS overrides max_ops (bigger graphs for long hunting runs); the
  // failure message repeats it so that the reproduction line stays exact.
  static GenOptions from_env() {
    GenOptions o;
    if (const char* v = std::getenv("THEA_FUZZ_MAX_OPS"); v && *v)
      o.max_ops = std::max(o.min_ops, std::atoi(v));
    if (const char* v = std::getenv("THEA_FUZZ_HUGE"); v && *v && std::string(v) != "0")
      o.huge = true;
    return o;
  }
};

namespace detail {

constexpr double kInt32Limit = 1 << 20;    // far from overflow through one more op
constexpr double kInt64Limit = 1ll << 40;  // exact in float64, far from overflow
constexpr double kFloatLimit = 1e6;        // results beyond are discarded

// A value in the generator's pool.
struct Val {
  Variable var;
  Shape shape;  // runtime shape (identical on every call)
  double lo = 0, hi = 0;
  bool exact = true;      // no rounding happened: every backend has the same bits
  bool stable = true;     // bit-identical on every backend (at most one correctly-rounded op)
  bool grad_safe = true;  // kinks (abs, max, clip...) only at stable points
  int depth = 0;
  int uses = 0;
  bool leaf = false;

  Dtype dtype() const { return var.dtype(); }
  int ndim() const { return static_cast<int>(shape.size()); }
  std::int64_t numel() const { return shape_numel(shape); }
  double mag() const { return std::max(std::abs(lo), std::abs(hi)); }
  const Shape& stype() const { return var.type().shape; }
  bool is_float_v() const { return is_float(dtype()); }
};

inline bool contains_zero(const Shape& s) {
  return std::any_of(s.begin(), s.end(), [](std::int64_t d) { return d == 0; });
}

// Broadcast of runtime shapes as thea does it: only dims of static size 1 stretch.
// Returns nullopt when the reference backend would refuse the combination.
inline std::optional<Shape> broadcast(const std::vector<const Val*>& vals) {
  int rank = 0;
  for (const Val* v : vals) rank = std::max(rank, v->ndim());
  Shape out(rank, 1);
  for (int d = 0; d < rank; ++d) {
    std::optional<std::int64_t> size;
    for (const Val* v : vals) {
      const int k = d - (rank - v->ndim());
      if (k < 0) continue;
      const std::int64_t s = v->shape[k];
      if (s == 1) continue;
      if (size && *size != s) return std::nullopt;
      size = s;
    }
    out[d] = size.value_or(1);
    for (const Val* v : vals) {
      const int k = d - (rank - v->ndim());
      if (k < 0) continue;
      if (v->shape[k] == 1 && out[d] != 1 && v->stype()[k] != 1) return std::nullopt;
      // A static size must agree with the runtime one (a static 1 may stretch).
      if (v->stype()[k] != kUnknownDim && v->stype()[k] != v->shape[k]) return std::nullopt;
    }
  }
  return out;
}

// Whether `v` broadcasts to exactly `target` (an update of a shared variable).
inline bool broadcasts_to(const Val& v, const Shape& target) {
  if (v.ndim() > static_cast<int>(target.size())) return false;
  const int off = static_cast<int>(target.size()) - v.ndim();
  for (int k = 0; k < v.ndim(); ++k) {
    if (v.shape[k] == target[off + k]) continue;
    if (v.shape[k] == 1 && v.stype()[k] == 1) continue;
    return false;
  }
  return true;
}

inline double trunc_toward_zero(double x) { return x < 0 ? std::ceil(x) : std::floor(x); }

// Corners of f over two intervals (f monotone in each argument on the domain).
template <class F>
std::pair<double, double> corners(F f, double alo, double ahi, double blo, double bhi) {
  const double c[4] = {f(alo, blo), f(alo, bhi), f(ahi, blo), f(ahi, bhi)};
  return {*std::min_element(c, c + 4), *std::max_element(c, c + 4)};
}

inline Tensor random_tensor(Rng& rng, Dtype dtype, const Shape& shape, double lo, double hi,
                            bool quantized) {
  Tensor t = Tensor::empty(shape, dtype);
  const std::int64_t n = t.numel();
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (std::int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<T, bool>) {
        p[i] = rng.chance(0.5);
      } else if constexpr (std::is_floating_point_v<T>) {
        double v = rng.uniform(lo, hi);
        if (quantized) v = std::clamp(std::round(v * 4) / 4, lo, hi);
        p[i] = static_cast<T>(v);
        // Rounding to float32 may step just outside [lo, hi]; stay inside.
        if (static_cast<double>(p[i]) < lo || static_cast<double>(p[i]) > hi)
          p[i] = static_cast<T>((lo + hi) / 2);
      } else {
        p[i] = static_cast<T>(rng.range(static_cast<std::int64_t>(std::ceil(lo)),
                                        static_cast<std::int64_t>(std::floor(hi))));
      }
    }
  });
  return t;
}

// numpy's slice resolution (as Subtensor does): length of x[start:stop:step] on `dim`.
inline std::int64_t slice_length(std::optional<std::int64_t> start,
                                 std::optional<std::int64_t> stop, std::optional<std::int64_t> step,
                                 std::int64_t dim) {
  const std::int64_t st = step.value_or(1);
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
  std::int64_t b = start.value_or(st < 0 ? kMax : 0);
  std::int64_t e = stop.value_or(st < 0 ? kMin : kMax);
  auto adjust = [&](std::int64_t& v) {
    if (v < 0) {
      v += dim;
      if (v < 0) v = st < 0 ? -1 : 0;
    } else if (v >= dim) {
      v = st < 0 ? dim - 1 : dim;
    }
  };
  adjust(b);
  adjust(e);
  if (st < 0) return e < b ? (b - e - 1) / (-st) + 1 : 0;
  return b < e ? (e - b - 1) / st + 1 : 0;
}

class Generator {
 public:
  Generator(std::uint64_t seed, const GenOptions& opt)
      : rng_(seed * 0x2545F4914F6CDD1Dull + 7), opt_(opt) {
    c_.seed = seed;
  }

  FuzzCase build() {
    c_.calls = rng_.irange(2, 3);
    c_.call_inputs.resize(c_.calls);
    // A few sizes shared by the whole case, so that random tensors often line up.
    dims_ = {rng_.irange(2, 5), rng_.irange(2, 6), rng_.irange(1, 4), rng_.irange(3, 7)};
    if (rng_.chance(opt_.p_big)) {
      // The same draws either way, so THEA_FUZZ_HUGE changes only these sizes.
      const int slot = rng_.irange(0, 3);
      dims_[slot] =
          opt_.huge ? rng_.pick({1031, 2053, 4099, 1031, 3001}) : rng_.pick({9, 17, 33, 67, 130});
    }
    const int n_leaves = rng_.irange(2, 3);
    for (int i = 0; i < n_leaves; ++i) push(new_leaf(random_dtype(), random_shape()));
    if (rng_.chance(0.1)) {  // two shared variables of one type: candidates for a swap
      const Dtype dt = random_dtype();
      const Shape s = random_shape();
      const auto range = default_range(dt);
      push(new_leaf(dt, s, range, LeafKind::Shared));
      push(new_leaf(dt, s, range, LeafKind::Shared));
    }
    if (rng_.chance(opt_.p_model)) guarded([&] { model_step(); });
    if (rng_.chance(opt_.p_sgd)) guarded([&] { sgd_update(); });
    if (rng_.chance(opt_.p_alias)) guarded([&] { aliased_update(); });
    const int n_ops = rng_.irange(opt_.min_ops, opt_.max_ops);
    for (int i = 0; i < n_ops; ++i) guarded([&] { random_op(); });
    if (rng_.chance(opt_.p_grad)) guarded([&] { random_grad(); });
    choose_outputs();
    add_updates();
    collect_inputs();
    return std::move(c_);
  }

 private:
  Rng rng_;
  GenOptions opt_;
  FuzzCase c_;
  std::vector<Val> pool_;
  std::vector<int> dims_;
  // Input leaves: per-call values, generated with the leaf.
  std::map<const Node*, std::vector<Tensor>> input_values_;
  std::set<const Node*> updated_;
  int names_ = 0;

  // Runs one construction; the library refusing it is recorded (a generator bug to fix).
  template <class F>
  void guarded(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      c_.skipped.push_back(e.what());
    }
  }

  // Adds v to the pool, unless its integers could wrap around or its floats are huge (the
  // node is then left unused).
  Val& push(Val v) {
    if (!int_ok(v.dtype(), v.lo, v.hi)) {
      discarded_ = std::move(v);
      return discarded_;
    }
    pool_.push_back(std::move(v));
    return pool_.back();
  }
  Val discarded_;

  std::string fresh(const char* prefix) { return prefix + std::to_string(names_++); }

  Dtype random_dtype() {
    switch (rng_.weighted({6, 2, 1.5, 1.5, 1, 0.3})) {
      case 0:
        return Dtype::Float32;
      case 1:
        return Dtype::Float64;
      case 2:
        return Dtype::Int32;
      case 3:
        return Dtype::Int64;
      case 4:
        return Dtype::Bool;
      default:
        return Dtype::UInt8;
    }
  }
  Dtype random_float() { return rng_.chance(0.75) ? Dtype::Float32 : Dtype::Float64; }

  std::int64_t random_dim() {
    if (rng_.chance(0.15)) return 1;
    return rng_.pick(dims_);
  }
  Shape random_shape(int min_rank = 0, int max_rank = 3) {
    int rank = std::clamp(static_cast<int>(rng_.weighted({1, 3, 4, 2, 0.5})), min_rank, max_rank);
    Shape s;
    for (int i = 0; i < rank; ++i) s.push_back(random_dim());
    return s;
  }

  // Static type for a runtime shape: size-1 dims are usually declared broadcastable.
  Shape static_type_for(const Shape& s) {
    Shape t;
    for (std::int64_t d : s) {
      if (d == 1)
        t.push_back(rng_.chance(0.85) ? 1 : kUnknownDim);
      else
        t.push_back(rng_.chance(0.5) ? d : kUnknownDim);
    }
    return t;
  }

  // ---------------------------------------------------------------- leaves

  std::pair<double, double> default_range(Dtype dt) {
    if (dt == Dtype::Bool) return {0, 1};
    if (dt == Dtype::UInt8) return {0, 9};
    if (is_integer(dt)) return rng_.chance(0.5) ? std::pair{-5.0, 5.0} : std::pair{0.0, 9.0};
    switch (rng_.irange(0, 3)) {
      case 0:
        return {-1, 1};
      case 1:
        return {-2, 2};
      case 2:
        return {0.5, 2};
      default:
        return {-3, 0.5};
    }
  }

  enum class LeafKind { Input, Shared, Constant };

  Val new_leaf(Dtype dt, const Shape& shape, std::optional<std::pair<double, double>> range = {},
               std::optional<LeafKind> kind = {}) {
    auto [lo, hi] = range ? *range : default_range(dt);
    LeafKind k = kind ? *kind : static_cast<LeafKind>(rng_.weighted({6, 2, 1.2}));
    const bool quantized = rng_.chance(0.3);
    Val v;
    v.shape = shape;
    v.lo = lo;
    v.hi = hi;
    v.leaf = true;
    switch (k) {
      case LeafKind::Input: {
        v.var = tensor(dt, static_type_for(shape), fresh("x"));
        std::vector<Tensor> vals;
        for (int c = 0; c < c_.calls; ++c)
          vals.push_back(random_tensor(rng_, dt, shape, lo, hi, quantized));
        input_values_[v.var.node().get()] = std::move(vals);
        break;
      }
      case LeafKind::Shared: {
        Tensor init = random_tensor(rng_, dt, shape, lo, hi, quantized);
        v.var = shared(init, fresh("w"));
        c_.shared.push_back(v.var);
        c_.shared_init.push_back(init);
        // From the second call on, a shared value is whatever the update computed: half of
        // the float ones may get a rounded (backend-dependent) update, so they are not
        // stable; the others only get updates that keep them bit-identical (update_for).
        if (is_float(dt) && rng_.chance(0.5)) v.stable = v.exact = false;
        break;
      }
      case LeafKind::Constant:
        v.var = constant(random_tensor(rng_, dt, shape, lo, hi, quantized), fresh("c"));
        break;
    }
    return v;
  }

  // An integer scalar input with the given value on each call (slice bounds, indices).
  Variable scalar_input(const std::vector<std::int64_t>& per_call) {
    const Dtype dt = rng_.chance(0.5) ? Dtype::Int64 : Dtype::Int32;
    Variable v = tensor(dt, Shape{}, fresh("i"));
    std::vector<Tensor> vals;
    for (std::int64_t x : per_call) vals.push_back(Tensor::scalar(static_cast<double>(x), dt));
    input_values_[v.node().get()] = std::move(vals);
    Val leaf;
    leaf.var = v;
    leaf.leaf = true;
    leaf.lo = leaf.hi = static_cast<double>(per_call[0]);
    for (std::int64_t x : per_call) {
      leaf.lo = std::min(leaf.lo, static_cast<double>(x));
      leaf.hi = std::max(leaf.hi, static_cast<double>(x));
    }
    leaf.uses = 1;
    push(leaf);
    return v;
  }

  // ---------------------------------------------------------------- picking operands

  // Index of a pool value satisfying pred, biased towards recent (deeper) values.
  std::optional<std::size_t> pick_index(const std::function<bool(const Val&)>& pred) {
    std::vector<std::size_t> ok;
    for (std::size_t i = 0; i < pool_.size(); ++i)
      if (pool_[i].depth < opt_.max_depth && pred(pool_[i])) ok.push_back(i);
    if (ok.empty()) return std::nullopt;
    if (ok.size() > 3 && rng_.chance(0.5)) return ok[ok.size() - 1 - rng_.irange(0, 2)];
    return rng_.pick(ok);
  }
  std::optional<Val> pick(const std::function<bool(const Val&)>& pred) {
    auto i = pick_index(pred);
    if (!i) return std::nullopt;
    pool_[*i].uses++;
    return pool_[*i];
  }

  // A new leaf whose shape broadcasts against `a`: some dims set to a static 1, leading
  // dims dropped (rank padding), or a broadcastable dim of `a` stretched.
  Shape partner_shape(const Val& a) {
    Shape s = a.shape;
    if (!s.empty() && rng_.chance(0.3)) s.erase(s.begin(), s.begin() + rng_.irange(1, a.ndim()));
    for (std::size_t d = 0; d < s.size(); ++d) {
      const int ad = static_cast<int>(d) + a.ndim() - static_cast<int>(s.size());
      if (rng_.chance(0.2))
        s[d] = 1;
      else if (a.shape[ad] == 1 && a.stype()[ad] == 1 && rng_.chance(0.5))
        s[d] = random_dim();
    }
    // A leaf of rank > a's rank makes the result grow in front.
    if (rng_.chance(0.1)) s.insert(s.begin(), random_dim());
    return s;
  }
  Val partner_leaf(const Val& a, Dtype dt, std::optional<std::pair<double, double>> range = {}) {
    Val v = new_leaf(dt, partner_shape(a), range);
    // Size-1 dims of the new leaf must be broadcastable where they meet larger sizes.
    if (!broadcast({&a, &v})) {
      Shape st = v.stype();
      for (std::size_t d = 0; d < st.size(); ++d)
        if (v.shape[d] == 1) st[d] = 1;
      if (v.var.node()->kind == NodeKind::Input) {
        std::vector<Tensor> vals = input_values_[v.var.node().get()];
        input_values_.erase(v.var.node().get());
        v.var = tensor(dt, st, v.var.name());
        input_values_[v.var.node().get()] = std::move(vals);
      }
    }
    return v;
  }

  // An operand for an elementwise op with `a`: from the pool or a new leaf.
  Val partner(const Val& a, const std::function<bool(const Val&)>& dtype_ok, Dtype new_dt,
              std::optional<std::pair<double, double>> range = {}) {
    if (rng_.chance(0.6)) {
      if (auto b = pick([&](const Val& v) {
            return &v != &a && dtype_ok(v) && broadcast({&a, &v}).has_value() &&
                   (!range || (v.lo >= range->first && v.hi <= range->second));
          }))
        return *b;
    }
    if (rng_.chance(0.2) && !range) {
      // A weak literal scalar.
      Val lit;
      double x = is_float(new_dt)
                     ? rng_.pick({0.5, 2.0, -1.5, 0.25, 3.0, 1.0, 0.0})
                     : static_cast<double>(rng_.irange(
                           new_dt == Dtype::UInt8 || a.dtype() == Dtype::UInt8 ? 0 : -3, 3));
      if (new_dt == Dtype::Bool) x = rng_.irange(0, 1);
      lit.var = is_float(new_dt) ? Variable(x) : Variable(static_cast<std::int64_t>(x));
      lit.lo = lit.hi = x;
      lit.leaf = true;
      if (new_dt == Dtype::Bool) lit.var = constant(Tensor::scalar(x, Dtype::Bool));
      return lit;
    }
    Val b = partner_leaf(a, new_dt, range);
    push(b).uses++;
    return b;
  }

  // ---------------------------------------------------------------- value transforms

  Val finish(Variable out, std::vector<const Val*> ins, double lo, double hi, bool exact,
             bool stable, bool grad_safe, Shape shape) {
    Val v;
    v.var = std::move(out);
    v.shape = std::move(shape);
    v.lo = lo;
    v.hi = hi;
    v.exact = exact;
    v.stable = stable;
    v.grad_safe = grad_safe;
    for (const Val* in : ins) {
      v.depth = std::max(v.depth, in->depth + 1);
      v.exact = v.exact && in->exact;
      v.stable = v.stable && in->stable;
      v.grad_safe = v.grad_safe && in->grad_safe;
    }
    if (v.dtype() == Dtype::Bool) {
      v.lo = std::max(0.0, std::min(v.lo, 1.0));
      v.hi = std::min(1.0, std::max(v.hi, 0.0));
      if (v.hi < v.lo) v.lo = 0, v.hi = 1;
    }
    return v;
  }

  static bool int_ok(Dtype dt, double lo, double hi) {
    if (is_float(dt)) return std::abs(lo) < kFloatLimit && std::abs(hi) < kFloatLimit;
    if (dt == Dtype::Int32) return std::abs(lo) < kInt32Limit && std::abs(hi) < kInt32Limit;
    if (dt == Dtype::Int64) return std::abs(lo) < kInt64Limit && std::abs(hi) < kInt64Limit;
    if (dt == Dtype::UInt8) return lo >= 0 && hi <= 255;  // no wrap-around
    return true;
  }

  // x with |x| <= m (a no-op when already so): tanh, clip, or division by a constant
  // (which the div_by_constant rewrite turns into a product).
  Val bounded(const Val& x, double m) {
    if (x.mag() <= m) return x;
    if (!x.is_float_v()) {
      const double b = std::floor(m);
      const double lo = x.dtype() == Dtype::UInt8 ? 0 : -b;  // literals must fit the dtype
      Variable out = clip(x.var, Variable(static_cast<std::int64_t>(lo)),
                          Variable(static_cast<std::int64_t>(b)));
      return finish(out, {&x}, std::max(x.lo, lo), std::min(x.hi, b), true, true, x.stable,
                    x.shape);
    }
    switch (rng_.irange(0, 2)) {
      case 0: {
        const double s = m < 1 ? m : 1.0;
        Variable out = tanh(x.var);
        if (s != 1.0) out = mul(out, Variable(s));
        return finish(out, {&x}, std::tanh(x.lo) * s, std::tanh(x.hi) * s, false, false, true,
                      x.shape);
      }
      case 1: {
        Variable out = clip(x.var, Variable(-m), Variable(m));
        return finish(out, {&x}, std::max(x.lo, -m), std::min(x.hi, m), true, true, x.stable,
                      x.shape);
      }
      default: {
        const double c = std::ceil(x.mag() / m * 2) / 2 + 0.5;
        Variable out = true_div(x.var, Variable(c));
        return finish(out, {&x}, x.lo / c, x.hi / c, false, false, true, x.shape);
      }
    }
  }

  // x with every element >= eps (float result): abs(x) + c, sqr(x) + c, exp(x), softplus + c.
  Val positive(const Val& x0, double eps) {
    if (x0.is_float_v() && x0.lo >= eps) return x0;
    Val x = bounded(x0, 8);
    switch (rng_.irange(0, 3)) {
      case 0: {
        Variable out = add(abs(x.var), Variable(eps + 0.25));
        const double m = x.mag();
        return to_float(
            finish(out, {&x}, eps + 0.25, m + eps + 0.25, false, x.exact, x.stable, x.shape));
      }
      case 1: {
        Val xb = bounded(x, 3);
        Variable out = add(sqr(xb.var), Variable(eps + 0.25));
        const double m = xb.mag();
        return to_float(
            finish(out, {&xb}, eps + 0.25, m * m + eps + 0.25, false, false, true, xb.shape));
      }
      case 2: {
        Val xb = bounded(x, 3);
        Variable out = exp(xb.var);
        if (std::exp(xb.lo) < eps) out = add(out, Variable(eps));
        return finish(out, {&xb}, std::exp(xb.lo), std::exp(xb.hi) + eps, false, false, true,
                      xb.shape);
      }
      default: {
        Variable out = add(softplus(x.var), Variable(eps + 0.1));
        return finish(out, {&x}, eps + 0.1, std::max(x.hi, 0.0) + 1 + eps, false, false, true,
                      x.shape);
      }
    }
  }

  Val to_float(const Val& x) {
    if (x.is_float_v()) return x;
    Variable out = cast(x.var, random_float());
    return finish(out, {&x}, x.lo, x.hi, true, true, true, x.shape);
  }

  // ---------------------------------------------------------------- random ops

  void random_op() {
    static const std::vector<double> kWeights = {
        14,   // unary math
        8,    // unary misc
        16,   // binary arithmetic
        6,    // comparisons and logic
        4,    // clip / switch
        1.5,  // fill, zeros_like, ones_like
        8,    // reductions
        2.5,  // argmax / argmin
        5,    // dot / outer
        5,    // dimshuffle / transpose
        4,    // reshape / flatten
        3,    // concatenate / stack
        6,    // subtensor
        3,    // take
        5,    // softmax family
        1,    // one_hot
        2,    // inc/set_subtensor, inc_rows
        4,    // canonicalize patterns
        5,    // gemm patterns: alpha * dot(A, B) + beta * C
    };
    switch (rng_.weighted(kWeights)) {
      case 0:
        return unary_math();
      case 1:
        return unary_misc();
      case 2:
        return binary_arith();
      case 3:
        return compare_logic();
      case 4:
        return ternary();
      case 5:
        return fill_op();
      case 6:
        return reduction();
      case 7:
        return arg_reduce();
      case 8:
        return dot_op();
      case 9:
        return dimshuffle_op();
      case 10:
        return reshape_op();
      case 11:
        return concat_op();
      case 12:
        return subtensor_op();
      case 13:
        return take_op();
      case 14:
        return softmax_op();
      case 15:
        return one_hot_op();
      case 16:
        return inc_op();
      case 17:
        return canonical_pattern();
      default:
        return gemm_pattern();
    }
  }

  bool numeric(const Val& v) { return v.dtype() != Dtype::Bool; }

  void unary_math() {
    auto xo = pick([&](const Val& v) { return numeric(v); });
    if (!xo) return;
    const Val x = *xo;
    const int which = rng_.irange(0, 9);
    switch (which) {
      case 0: {  // exp
        Val b = bounded(x, rng_.chance(0.5) ? 3 : 8);
        push(finish(exp(b.var), {&b}, std::exp(b.lo), std::exp(b.hi), false, false, true, b.shape));
        return;
      }
      case 1: {  // log
        Val p = positive(x, 0.5);
        push(finish(log(p.var), {&p}, std::log(p.lo), std::log(p.hi), false, false, true, p.shape));
        return;
      }
      case 2: {  // log1p
        Val p = positive(x, 0.25);
        Variable in = sub(p.var, Variable(1.0));  // >= -0.75
        Val q = finish(in, {&p}, p.lo - 1, p.hi - 1, false, false, true, p.shape);
        push(finish(log1p(q.var), {&q}, std::log1p(q.lo), std::log1p(q.hi), false, false, true,
                    q.shape));
        return;
      }
      case 3: {  // sqrt
        Val p = positive(x, 0.25);
        push(finish(sqrt(p.var), {&p}, std::sqrt(p.lo), std::sqrt(p.hi), false, false, true,
                    p.shape));
        return;
      }
      case 4: {  // inv
        Val p = positive(x, 0.5);
        if (rng_.chance(0.5)) {
          push(finish(inv(p.var), {&p}, 1 / p.hi, 1 / p.lo, false, false, true, p.shape));
        } else {
          Val n = finish(neg(p.var), {&p}, -p.hi, -p.lo, true, true, true, p.shape);
          push(finish(inv(n.var), {&n}, -1 / p.lo, -1 / p.hi, false, false, true, n.shape));
        }
        return;
      }
      case 5: {  // tanh
        push(finish(tanh(x.var), {&x}, std::tanh(x.lo), std::tanh(x.hi), false, false, true,
                    x.shape));
        return;
      }
      case 6: {  // sigmoid
        auto sg = [](double v) { return 1 / (1 + std::exp(-v)); };
        push(finish(sigmoid(x.var), {&x}, sg(x.lo), sg(x.hi), false, false, true, x.shape));
        return;
      }
      case 7: {  // softplus
        auto sp = [](double v) { return std::log1p(std::exp(-std::abs(v))) + std::max(v, 0.0); };
        push(finish(softplus(x.var), {&x}, sp(x.lo), sp(x.hi), false, false, true, x.shape));
        return;
      }
      case 8: {  // log(sigmoid(x)): the stabilize rewrite makes it -softplus(-x)
        Val b = bounded(to_float(x), 15);
        auto ls = [](double v) {
          return -(std::log1p(std::exp(-std::abs(v))) + std::max(-v, 0.0));
        };
        push(finish(log(sigmoid(b.var)), {&b}, ls(b.lo), ls(b.hi), false, false, true, b.shape));
        c_.features.push_back("log_sigmoid");
        return;
      }
      default: {  // pow(positive base, bounded exponent)
        Val base = positive(x, 0.5);
        base = bounded(base, 4);
        Val e = partner(
            base, [](const Val& v) { return v.is_float_v(); }, random_float(),
            std::pair{-2.0, 2.0});
        if (!broadcast({&base, &e})) return;
        auto [lo, hi] = corners([](double a, double b) { return std::pow(a, b); },
                                std::max(base.lo, 0.5), base.hi, e.lo, e.hi);
        Shape s = *broadcast({&base, &e});
        push(finish(pow(base.var, e.var), {&base, &e}, lo, hi, false, false, true, s));
        return;
      }
    }
  }

  void unary_misc() {
    auto xo = pick([](const Val&) { return true; });
    if (!xo) return;
    const Val x = *xo;
    switch (rng_.irange(0, 5)) {
      case 0:
        if (!numeric(x)) return logical_not_op(x);
        push(finish(neg(x.var), {&x}, -x.hi, -x.lo, true, true, true, x.shape));
        return;
      case 1:
        if (!numeric(x)) return logical_not_op(x);
        push(finish(abs(x.var), {&x}, x.lo >= 0 ? x.lo : (x.hi <= 0 ? -x.hi : 0), x.mag(), true,
                    true, x.stable, x.shape));
        return;
      case 2:  // sign: discontinuous, needs a stable operand
        if (!x.stable || !numeric(x)) return;
        push(finish(sgn(x.var), {&x}, x.lo < 0 ? -1 : (x.lo > 0 ? 1 : 0),
                    x.hi > 0 ? 1 : (x.hi < 0 ? -1 : 0), true, true, true, x.shape));
        return;
      case 3: {  // sqr
        if (!numeric(x)) return;
        Val b = bounded(x, x.is_float_v() ? 30 : 1000);
        const double m = b.mag();
        const double lo = b.lo >= 0 ? b.lo * b.lo : (b.hi <= 0 ? b.hi * b.hi : 0);
        const bool ex = !b.is_float_v();
        push(finish(sqr(b.var), {&b}, lo, m * m, ex, b.exact, true, b.shape));
        return;
      }
      case 4: {  // cast
        static const std::vector<Dtype> kTo = {Dtype::Float32, Dtype::Float64, Dtype::Int32,
                                               Dtype::Int64,   Dtype::Bool,    Dtype::UInt8};
        Dtype to = rng_.pick(kTo);
        if (to == x.dtype()) return;
        if (!is_float(to) && x.is_float_v() && !x.stable) return;  // truncation: discontinuous
        double lo = x.lo, hi = x.hi;
        if (to == Dtype::Bool) {
          lo = (x.lo > 0 || x.hi < 0) ? 1 : 0;
          hi = 1;
        } else if (!is_float(to)) {
          lo = trunc_toward_zero(lo);
          hi = trunc_toward_zero(hi);
          // Out-of-range float -> integer conversion is undefined behaviour in C++.
          if (!int_ok(to, lo, hi)) return;
        }
        // float64 -> float32 rounds once: stable when the input was exact.
        const bool rounds = x.dtype() == Dtype::Float64 && to == Dtype::Float32;
        push(
            finish(cast(x.var, to), {&x}, lo, hi, !rounds, rounds ? x.exact : true, true, x.shape));
        return;
      }
      default: {  // identity: the scalar op (no API function), x * 1 or 0 + x
        if (rng_.chance(0.3)) {
          Variable out(make_apply(std::make_shared<Elemwise>(ScalarOp::Identity), {x.var.node()},
                                  std::source_location::current()));
          push(finish(out, {&x}, x.lo, x.hi, true, true, true, x.shape));
          return;
        }
        if (!numeric(x)) return logical_not_op(x);
        Variable out = rng_.chance(0.5) ? mul(x.var, Variable(1)) : add(Variable(0), x.var);
        if (out.dtype() != x.dtype()) return;
        push(finish(out, {&x}, x.lo, x.hi, true, true, true, x.shape));
        return;
      }
    }
  }

  void logical_not_op(const Val& x) {
    push(finish(logical_not(x.var), {&x}, 0, 1, true, true, true, x.shape));
  }

  void binary_arith() {
    auto ao = pick([&](const Val& v) { return numeric(v); });
    if (!ao) return;
    Val a = *ao;
    const int op = rng_.irange(0, 6);  // add sub mul div pow(int) maximum minimum
    const Dtype pdt = rng_.chance(0.7) ? a.dtype() : random_dtype();
    auto numeric_ok = [&](const Val& v) { return numeric(v) || op == 0 || op == 2 || op >= 5; };
    if (op == 2 || op == 4) a = bounded(a, a.is_float_v() ? 10 : 100);
    if (op == 3) {  // true_div: the denominator is kept away from zero
      Val b0 = partner(
          a, [](const Val& v) { return v.dtype() != Dtype::Bool; },
          pdt == Dtype::Bool ? Dtype::Float32 : pdt);
      Val b = positive(b0, 0.5);
      if (rng_.chance(0.5)) b = finish(neg(b.var), {&b}, -b.hi, -b.lo, true, true, true, b.shape);
      auto s = broadcast({&a, &b});
      if (!s) return;
      auto [lo, hi] = corners([](double x, double y) { return x / y; }, a.lo, a.hi, b.lo, b.hi);
      Variable out = true_div(a.var, b.var);
      push(finish(out, {&a, &b}, lo, hi, false, false, true, *s));
      return;
    }
    if (op == 4) {  // pow with integer operands (exact) or float operands via unary_math
      if (a.is_float_v()) return unary_math();
      Val e = partner(
          a, [](const Val& v) { return is_integer(v.dtype()); }, a.dtype(), std::pair{0.0, 3.0});
      auto s = broadcast({&a, &e});
      if (!s || e.lo < 0) return;
      const double m = std::pow(a.mag(), std::max(e.hi, 1.0));
      Variable out = pow(a.var, e.var);
      if (!int_ok(out.dtype(), -m, m)) return;
      push(finish(out, {&a, &e}, -m, m, true, true, true, *s));
      return;
    }
    Val b = partner(a, numeric_ok, pdt);
    if (op == 2) b = bounded(b, b.is_float_v() ? 10 : 100);
    auto s = broadcast({&a, &b});
    if (!s) return;
    if (!numeric(a) || !numeric(b)) {
      if (op == 1) return;  // sub of bools is refused (as numpy)
    }
    Variable out;
    double lo = 0, hi = 0;
    bool rounds = true;  // one correctly rounded float op
    bool kink = false;
    switch (op) {
      case 0:
        out = add(a.var, b.var);
        lo = a.lo + b.lo, hi = a.hi + b.hi;
        break;
      case 1:
        out = sub(a.var, b.var);
        lo = a.lo - b.hi, hi = a.hi - b.lo;
        break;
      case 2:
        out = mul(a.var, b.var);
        std::tie(lo, hi) =
            corners([](double x, double y) { return x * y; }, a.lo, a.hi, b.lo, b.hi);
        break;
      case 5:
        out = maximum(a.var, b.var);
        lo = std::max(a.lo, b.lo), hi = std::max(a.hi, b.hi);
        rounds = false, kink = true;
        break;
      default:
        out = minimum(a.var, b.var);
        lo = std::min(a.lo, b.lo), hi = std::min(a.hi, b.hi);
        rounds = false, kink = true;
        break;
    }
    if (!int_ok(out.dtype(), lo, hi)) return;
    const bool is_int = !is_float(out.dtype());
    // Mixed int/float operands are converted first (exact for our small ints).
    const bool exact = is_int || !rounds;
    const bool stable = exact || (a.exact && b.exact);
    const bool gsafe = !kink || (a.stable && b.stable);
    push(finish(out, {&a, &b}, lo, hi, exact, stable, gsafe, *s));
  }

  void compare_logic() {
    if (rng_.chance(0.3)) {  // logic on bools
      auto a = pick([](const Val& v) { return v.dtype() == Dtype::Bool; });
      if (!a) return;
      Val b = partner(
          *a, [](const Val& v) { return v.dtype() == Dtype::Bool; }, Dtype::Bool);
      auto s = broadcast({&*a, &b});
      if (!s) return;
      Variable out = rng_.chance(0.5) ? logical_and(a->var, b.var) : logical_or(a->var, b.var);
      if (rng_.chance(0.3)) out = rng_.chance(0.5) ? (a->var & b.var) : (a->var | b.var);
      push(finish(out, {&*a, &b}, 0, 1, true, true, true, *s));
      return;
    }
    auto a = pick([](const Val& v) { return v.stable; });
    if (!a) return;
    Val b = partner(
        *a, [](const Val& v) { return v.stable; }, rng_.chance(0.7) ? a->dtype() : random_dtype());
    if (!b.stable) return;
    auto s = broadcast({&*a, &b});
    if (!s) return;
    Variable out;
    switch (rng_.irange(0, 5)) {
      case 0:
        out = rng_.chance(0.5) ? lt(a->var, b.var) : (a->var < b.var);
        break;
      case 1:
        out = le(a->var, b.var);
        break;
      case 2:
        out = rng_.chance(0.5) ? gt(a->var, b.var) : (a->var > b.var);
        break;
      case 3:
        out = ge(a->var, b.var);
        break;
      case 4:
        out = eq(a->var, b.var);
        break;
      default:
        out = neq(a->var, b.var);
        break;
    }
    push(finish(out, {&*a, &b}, 0, 1, true, true, true, *s));
  }

  void ternary() {
    if (rng_.chance(0.5)) {  // clip(x, lo, hi) with literal or tensor bounds
      auto x = pick([&](const Val& v) { return numeric(v); });
      if (!x) return;
      if (rng_.chance(0.5)) {
        // Quarter steps for floats (exact in every dtype), whole numbers for integers.
        const double q = x->is_float_v() ? 4 : 1;
        double l = std::round(rng_.uniform(x->lo, (x->lo + x->hi) / 2) * q) / q;
        double h = std::max(l, std::round(rng_.uniform((x->lo + x->hi) / 2, x->hi) * q) / q);
        Variable out = x->is_float_v() ? clip(x->var, Variable(l), Variable(h))
                                       : clip(x->var, Variable(static_cast<std::int64_t>(l)),
                                              Variable(static_cast<std::int64_t>(h)));
        if (out.dtype() != x->dtype()) return;
        push(finish(out, {&*x}, std::clamp(x->lo, l, h), std::clamp(x->hi, l, h), true, true,
                    x->stable, x->shape));
        return;
      }
      Val lo = partner(
          *x, [&](const Val& v) { return v.dtype() == x->dtype(); }, x->dtype());
      Val hi0 = partner(
          *x, [&](const Val& v) { return v.dtype() == x->dtype(); }, x->dtype());
      auto s = broadcast({&*x, &lo, &hi0});
      if (!s) return;
      // hi >= lo is not required by the op (numpy's clip gives hi then): any values do.
      Variable out = clip(x->var, lo.var, hi0.var);
      const double rlo = std::min(std::max(x->lo, lo.lo), hi0.lo);
      const double rhi = std::max(std::min(x->hi, hi0.hi), lo.hi);
      push(finish(out, {&*x, &lo, &hi0}, std::min(rlo, rhi), std::max(rlo, rhi), true, true,
                  x->stable && lo.stable && hi0.stable, *s));
      return;
    }
    // switch(cond, a, b): cond is bool (stable by construction) or a stable number.
    auto cond = pick([](const Val& v) { return v.dtype() == Dtype::Bool || v.stable; });
    if (!cond) return;
    const Dtype dt = random_dtype();
    Val a = partner(
        *cond, [&](const Val& v) { return v.dtype() == dt; }, dt);
    Val b = partner(
        *cond, [&](const Val& v) { return v.dtype() == dt || v.dtype() != Dtype::Bool; }, dt);
    auto s = broadcast({&*cond, &a, &b});
    if (!s) return;
    Variable out =
        rng_.chance(0.5) ? switch_(cond->var, a.var, b.var) : where(cond->var, a.var, b.var);
    push(finish(out, {&*cond, &a, &b}, std::min(a.lo, b.lo), std::max(a.hi, b.hi), true, true, true,
                *s));
  }

  void fill_op() {
    auto x = pick([](const Val&) { return true; });
    if (!x) return;
    switch (rng_.irange(0, 2)) {
      case 0:
        push(finish(zeros_like(x->var), {&*x}, 0, 0, true, true, true, x->shape));
        return;
      case 1:
        push(finish(ones_like(x->var), {&*x}, 1, 1, true, true, true, x->shape));
        return;
      default: {
        // fill(like, value): value broadcast to like's shape.
        Val v = partner(
            *x, [](const Val&) { return true; }, random_dtype());
        auto s = broadcast({&*x, &v});
        if (!s || *s != x->shape) return;
        Val like = *x;
        like.stable = like.exact = like.grad_safe = true;  // only its shape is read
        push(finish(fill(x->var, v.var), {&like, &v}, v.lo, v.hi, true, true, true, *s));
        return;
      }
    }
  }

  // Random reduction axes of v: nullopt (all), or a sorted subset, sometimes negative.
  std::pair<Axes, std::vector<int>> random_axes(const Val& v) {
    if (v.ndim() == 0 || rng_.chance(0.2)) {
      std::vector<int> all(v.ndim());
      for (int i = 0; i < v.ndim(); ++i) all[i] = i;
      return {rng_.chance(0.5) || v.ndim() == 0 ? Axes(std::nullopt) : Axes(std::vector<int>{}),
              all};
    }
    std::vector<int> axes;
    for (int i = 0; i < v.ndim(); ++i)
      if (rng_.chance(0.5)) axes.push_back(i);
    if (axes.empty()) axes.push_back(rng_.irange(0, v.ndim() - 1));
    std::vector<int> spelled = axes;
    for (int& a : spelled)
      if (rng_.chance(0.3)) a -= v.ndim();
    return {Axes(spelled), axes};
  }

  void reduction() {
    auto xo = pick([](const Val&) { return true; });
    if (!xo) return;
    Val x = *xo;
    const int kind = static_cast<int>(rng_.weighted({4, 2, 2, 2, 1}));  // sum mean max min prod
    auto [spelled, axes] = random_axes(x);
    bool keep = rng_.chance(0.35);
    std::int64_t n = 1;
    Shape out;
    for (int d = 0; d < x.ndim(); ++d) {
      if (std::find(axes.begin(), axes.end(), d) != axes.end()) {
        n *= x.shape[d];
        if (keep) out.push_back(1);
      } else {
        out.push_back(x.shape[d]);
      }
    }
    if (n == 0 && kind != 0 && kind != 4) return;  // mean/max/min of nothing
    const bool single = spelled && spelled->size() == 1 && rng_.chance(0.5);
    const int ax = single ? (*spelled)[0] : 0;
    Variable r;
    double lo = 0, hi = 0;
    bool exact = false, stable = false, gsafe = true;
    const double dn = static_cast<double>(n);
    switch (kind) {
      case 0:
        if (x.dtype() != Dtype::Bool) x = bounded(x, x.is_float_v() ? 20 : 1e4);
        r = single ? sum(x.var, ax, keep) : sum(x.var, spelled, keep);
        lo = std::min(0.0, x.lo * dn), hi = std::max(0.0, x.hi * dn);
        exact = stable = !is_float(r.dtype());
        break;
      case 1:
        r = single ? mean(x.var, ax, keep) : mean(x.var, spelled, keep);
        lo = x.lo, hi = x.hi;
        break;
      case 2:
      case 3:
        r = kind == 2 ? (single ? max(x.var, ax, keep) : max(x.var, spelled, keep))
                      : (single ? min(x.var, ax, keep) : min(x.var, spelled, keep));
        lo = x.lo, hi = x.hi;
        exact = stable = true;
        gsafe = x.stable;
        break;
      default: {
        if (n > 12) return;
        x = bounded(x, x.is_float_v() ? 1.5 : 3);
        const double m = std::pow(std::max(x.mag(), 1.0), dn);
        r = single ? prod(x.var, ax, keep) : prod(x.var, spelled, keep);
        lo = -m, hi = m;
        if (x.lo >= 0) lo = std::min(1.0, std::pow(x.lo, dn));
        exact = stable = !is_float(r.dtype());
        break;
      }
    }
    if (!int_ok(r.dtype(), lo, hi)) return;
    push(finish(r, {&x}, lo, hi, exact, stable, gsafe, out));
  }

  void arg_reduce() {
    auto xo = pick([](const Val& v) { return v.stable && v.numel() > 0; });
    if (!xo) return;
    Val x = *xo;
    const Val before_softmax = x;
    bool through_softmax = false;
    if (x.is_float_v() && (x.ndim() == 1 || x.ndim() == 2) && rng_.chance(0.35)) {
      through_softmax = true;
      // argmax(softmax(x)): monotonic along rows only; the argmax_softmax rewrite must keep
      // the other axes (and the flattened form) as they are.
      Val b = bounded(x, 8);
      const bool log_form = rng_.chance(0.4);
      Variable sm = log_form ? nnet::log_softmax(b.var) : nnet::softmax(b.var);
      x = finish(sm, {&b}, log_form ? -30 : 0, log_form ? 0 : 1, false, true, true, b.shape);
      c_.features.push_back("argmax_softmax");
    }
    std::optional<int> axis;
    bool keep = rng_.chance(0.3);
    Shape out;
    if (x.ndim() > 0 && rng_.chance(0.75)) {
      int a = rng_.irange(0, x.ndim() - 1);
      for (int d = 0; d < x.ndim(); ++d) {
        if (d != a)
          out.push_back(x.shape[d]);
        else if (keep)
          out.push_back(1);
      }
      axis = rng_.chance(0.3) ? a - x.ndim() : a;
      if (x.shape[a] == 0) return;
    } else {
      if (keep) out = Shape(x.ndim(), 1);
    }
    const bool is_max = rng_.chance(0.6);
    // Softmax values are bit-identical across backends only in their order along a row (the
    // per-row sums round differently): an arg-reduction across rows (axis 0, or the whole
    // matrix) of tied rows, such as one-hot ones, may pick any of them. It reduces the
    // softmax's input instead, which keeps the random draws, and so every other graph, as
    // they were.
    if (through_softmax && x.ndim() == 2 && x.shape[0] > 1 &&
        (!axis || *axis == 0 || *axis == -2)) {
      x = before_softmax;
      c_.features.pop_back();
    }
    Variable r = is_max ? argmax(x.var, axis, keep) : argmin(x.var, axis, keep);
    push(finish(r, {&x}, 0, static_cast<double>(std::max<std::int64_t>(x.numel() - 1, 0)), true,
                true, true, out));
  }

  // A pool value or new leaf with exactly `shape` and a dtype accepted by `ok`.
  Val of_shape(const Shape& shape, const std::function<bool(Dtype)>& ok, Dtype new_dt,
               std::optional<std::pair<double, double>> range = {}) {
    if (rng_.chance(0.5)) {
      if (auto v = pick([&](const Val& v) {
            return v.shape == shape && ok(v.dtype()) &&
                   (!range || (v.lo >= range->first && v.hi <= range->second));
          }))
        return *v;
    }
    Val v = new_leaf(new_dt, shape, range);
    push(v).uses++;
    return v;
  }

  void dot_op() {
    auto ao = pick(
        [](const Val& v) { return (v.ndim() == 1 || v.ndim() == 2) && v.dtype() != Dtype::Bool; });
    if (!ao) return;
    Val a = bounded(*ao, ao->is_float_v() ? 5 : 50);
    if (a.ndim() == 1 && rng_.chance(0.25)) {  // outer
      Val b = bounded(of_shape(
                          {random_dim()}, [&](Dtype d) { return d == a.dtype(); }, a.dtype()),
                      5);
      Variable out = outer(a.var, b.var);
      auto [lo, hi] = corners([](double x, double y) { return x * y; }, a.lo, a.hi, b.lo, b.hi);
      const bool f = is_float(out.dtype());
      push(finish(out, {&a, &b}, lo, hi, !f, !f || (a.exact && b.exact), true,
                  {a.shape[0], b.shape[0]}));
      return;
    }
    const std::int64_t k = a.shape.back();
    Shape bs = {k};
    if (rng_.chance(0.7)) bs.push_back(random_dim());
    const Dtype bdt = rng_.chance(0.8) ? a.dtype() : random_dtype();
    Val b = bounded(of_shape(
                        bs, [](Dtype d) { return d != Dtype::Bool; },
                        bdt == Dtype::Bool ? Dtype::Float32 : bdt),
                    b_bound(a));
    Variable out = dot(a.var, b.var);
    Shape os;
    if (a.ndim() == 2) os.push_back(a.shape[0]);
    if (b.ndim() == 2) os.push_back(b.shape[1]);
    const double m = static_cast<double>(k) * a.mag() * b.mag();
    if (!int_ok(out.dtype(), -m, m)) return;
    const bool f = is_float(out.dtype());
    push(finish(out, {&a, &b}, -m, m, !f, !f, true, os));
  }
  double b_bound(const Val& a) { return a.is_float_v() ? 5 : 50; }

  void dimshuffle_op() {
    auto xo = pick([](const Val& v) { return v.ndim() <= 4; });
    if (!xo) return;
    const Val x = *xo;
    if (rng_.chance(0.3) && x.ndim() >= 1) {  // transpose
      std::vector<int> perm(x.ndim());
      for (int i = 0; i < x.ndim(); ++i) perm[i] = i;
      Variable out;
      Shape s;
      if (rng_.chance(0.5)) {
        out = x.ndim() == 2 && rng_.chance(0.5) ? x.var.T() : transpose(x.var);
        std::reverse(perm.begin(), perm.end());
      } else {
        for (int i = x.ndim() - 1; i > 0; --i) std::swap(perm[i], perm[rng_.irange(0, i)]);
        out = transpose(x.var, perm);
      }
      for (int p : perm) s.push_back(x.shape[p]);
      push(finish(out, {&x}, x.lo, x.hi, true, true, true, s));
      return;
    }
    // Keep every axis that is not statically broadcastable; drop some that are.
    std::vector<int> pattern;
    for (int i = 0; i < x.ndim(); ++i)
      if (!(x.stype()[i] == 1 && rng_.chance(0.5))) pattern.push_back(i);
    for (int i = static_cast<int>(pattern.size()) - 1; i > 0; --i)
      if (rng_.chance(0.6)) std::swap(pattern[i], pattern[rng_.irange(0, i)]);
    const int inserts = rng_.irange(0, 2);
    for (int k = 0; k < inserts && pattern.size() < 4; ++k)
      pattern.insert(pattern.begin() + rng_.irange(0, static_cast<int>(pattern.size())), -1);
    Shape s;
    for (int p : pattern) s.push_back(p < 0 ? 1 : x.shape[p]);
    push(finish(dimshuffle(x.var, pattern), {&x}, x.lo, x.hi, true, true, true, s));
  }

  void reshape_op() {
    auto xo = pick([](const Val& v) { return v.ndim() >= 1 || v.numel() == 1; });
    if (!xo) return;
    const Val x = *xo;
    if (rng_.chance(0.3) && x.ndim() >= 1) {
      const int outdim = rng_.irange(1, x.ndim());
      Shape s(x.shape.begin(), x.shape.begin() + outdim - 1);
      std::int64_t rest = 1;
      for (int d = outdim - 1; d < x.ndim(); ++d) rest *= x.shape[d];
      s.push_back(rest);
      push(finish(flatten(x.var, outdim), {&x}, x.lo, x.hi, true, true, true, s));
      return;
    }
    // Factor numel into a random shape of rank 0..4.
    std::int64_t n = x.numel();
    if (n == 0) return;
    std::vector<std::int64_t> primes;
    for (std::int64_t p = 2, m = n; m > 1; ++p)
      while (m % p == 0) primes.push_back(p), m /= p;
    const int rank = primes.empty() ? rng_.irange(0, 2) : rng_.irange(1, 4);
    Shape s(rank, 1);
    for (std::int64_t p : primes) s[rng_.irange(0, rank - 1)] *= p;
    Shape spec = s;
    if (rank > 0 && rng_.chance(0.4)) spec[rng_.irange(0, rank - 1)] = -1;
    for (int i = 0; i < rank && i < x.ndim(); ++i)
      if (spec[i] == x.shape[i] && spec[i] != 0 && rng_.chance(0.3)) spec[i] = 0;
    push(finish(reshape(x.var, spec), {&x}, x.lo, x.hi, true, true, true, s));
  }

  void concat_op() {
    auto xo = pick([](const Val& v) { return v.ndim() >= 1; });
    if (!xo) return;
    const Val x = *xo;
    if (rng_.chance(0.25)) {  // stack
      const int parts = rng_.irange(2, 3);
      std::vector<Val> vals{x};
      for (int i = 1; i < parts; ++i)
        vals.push_back(of_shape(
            x.shape, [&](Dtype d) { return d == x.dtype(); }, x.dtype()));
      const int axis = rng_.irange(0, x.ndim());
      std::vector<Variable> vars;
      std::vector<const Val*> ins;
      double lo = x.lo, hi = x.hi;
      for (const Val& v : vals) {
        vars.push_back(v.var);
        ins.push_back(&v);
        lo = std::min(lo, v.lo), hi = std::max(hi, v.hi);
      }
      Shape s = x.shape;
      s.insert(s.begin() + axis, parts);
      push(finish(stack(vars, rng_.chance(0.3) ? axis - x.ndim() - 1 : axis), ins, lo, hi, true,
                  true, true, s));
      return;
    }
    const int axis = rng_.irange(0, x.ndim() - 1);
    const int parts = rng_.irange(2, 3);
    std::vector<Val> vals{x};
    Shape s = x.shape;
    for (int i = 1; i < parts; ++i) {
      Shape ps = x.shape;
      ps[axis] = rng_.chance(0.1) ? 0 : random_dim();
      const Dtype dt = rng_.chance(0.8) ? x.dtype() : random_dtype();
      vals.push_back(of_shape(
          ps, [&](Dtype d) { return d == dt; }, dt));
      s[axis] += ps[axis];
    }
    if (rng_.chance(0.5)) std::swap(vals[0], vals[rng_.irange(1, parts - 1)]);
    std::vector<Variable> vars;
    std::vector<const Val*> ins;
    double lo = x.lo, hi = x.hi;
    for (const Val& v : vals) {
      vars.push_back(v.var);
      ins.push_back(&v);
      lo = std::min(lo, v.lo), hi = std::max(hi, v.hi);
    }
    Variable out = concatenate(vars, axis);
    // Mixed dtypes promote; int64 with float32 becomes float64 (exact for small ints).
    push(finish(out, ins, lo, hi, true, true, true, s));
  }

  // One slice or index per leading axis, with constant and symbolic bounds; symbolic
  // bounds change from call to call but always give the same lengths.
  void subtensor_op() {
    auto xo = pick([](const Val& v) { return v.ndim() >= 1; });
    if (!xo) return;
    const Val x = *xo;
    const int nidx = rng_.irange(1, x.ndim());
    std::vector<IndexEntry> index;
    Shape out;
    for (int axis = 0; axis < nidx; ++axis) {
      const std::int64_t dim = x.shape[axis];
      const bool symbolic = rng_.chance(0.35);
      if (dim > 0 && rng_.chance(0.25)) {  // integer index: drops the axis
        std::vector<std::int64_t> vals;
        for (int c = 0; c < c_.calls; ++c) vals.push_back(rng_.range(-dim, dim - 1));
        if (symbolic)
          index.emplace_back(scalar_input(vals));
        else
          index.emplace_back(Variable(vals[0]));
        continue;
      }
      if (rng_.chance(0.15)) {  // full slice
        index.emplace_back(Slice());
        out.push_back(dim);
        continue;
      }
      auto draw = [&]() {
        std::optional<std::int64_t> st, sp, step;
        if (rng_.chance(0.7)) st = rng_.range(-dim - 1, dim + 1);
        if (rng_.chance(0.7)) sp = rng_.range(-dim - 1, dim + 1);
        if (rng_.chance(0.5)) step = rng_.pick<std::int64_t>({1, 2, 3, -1, -2});
        return std::tuple{st, sp, step};
      };
      auto [st0, sp0, step0] = draw();
      const std::int64_t len = slice_length(st0, sp0, step0, dim);
      // Minibatch form: start i, stop i + len (the stop is computed in the graph).
      if (symbolic && rng_.chance(0.4) && dim >= 2) {
        const std::int64_t l = rng_.range(1, dim - 1);
        std::vector<std::int64_t> starts;
        for (int c = 0; c < c_.calls; ++c) starts.push_back(rng_.range(0, dim - l));
        Variable i = scalar_input(starts);
        Variable stop = add(i, Variable(static_cast<std::int64_t>(l)));
        index.emplace_back(Slice(i, stop));
        out.push_back(l);
        continue;
      }
      std::vector<std::tuple<std::optional<std::int64_t>, std::optional<std::int64_t>,
                             std::optional<std::int64_t>>>
          per_call{{st0, sp0, step0}};
      for (int c = 1; c < c_.calls; ++c) {
        auto pick_v = per_call[0];
        if (symbolic) {
          for (int tries = 0; tries < 30; ++tries) {
            auto [a, b, s] = draw();
            // Same presence of bounds, same step: only the values move.
            if (a.has_value() != st0.has_value() || b.has_value() != sp0.has_value()) continue;
            s = step0;
            if (slice_length(a, b, s, dim) == len) {
              pick_v = {a, b, s};
              break;
            }
          }
        }
        per_call.push_back(pick_v);
      }
      auto bound = [&](int which) -> std::optional<Variable> {
        auto get = [&](int c) {
          auto& t = per_call[c];
          return which == 0 ? std::get<0>(t) : (which == 1 ? std::get<1>(t) : std::get<2>(t));
        };
        if (!get(0)) return std::nullopt;
        if (symbolic && rng_.chance(0.7)) {
          std::vector<std::int64_t> vals;
          for (int c = 0; c < c_.calls; ++c) vals.push_back(*get(c));
          return scalar_input(vals);
        }
        // A constant bound must not change between calls.
        for (int c = 1; c < c_.calls; ++c)
          if (*get(c) != *get(0)) {
            std::vector<std::int64_t> vals;
            for (int k = 0; k < c_.calls; ++k) vals.push_back(*get(k));
            return scalar_input(vals);
          }
        return Variable(*get(0));
      };
      std::optional<Variable> a = bound(0), b = bound(1), s = bound(2);
      index.emplace_back(Slice(a, b, s));
      out.push_back(len);
    }
    for (int axis = nidx; axis < x.ndim(); ++axis) out.push_back(x.shape[axis]);
    push(finish(subtensor(x.var, index), {&x}, x.lo, x.hi, true, true, true, out));
  }

  // Integer index vector of length n for rows of size `rows`, per call (input) or constant.
  Val index_vector(std::int64_t n, std::int64_t rows, bool allow_negative = true) {
    const Dtype dt = rng_.chance(0.5) ? Dtype::Int64 : Dtype::Int32;
    const double lo = allow_negative ? static_cast<double>(-rows) : 0;
    return new_leaf(dt, {n}, std::pair{lo, static_cast<double>(rows - 1)},
                    rng_.chance(0.7) ? LeafKind::Input : LeafKind::Constant);
  }

  void take_op() {
    auto xo = pick([](const Val& v) { return v.ndim() >= 1 && v.shape[0] > 0; });
    if (!xo) return;
    const Val x = *xo;
    const std::int64_t n = rng_.chance(0.1) ? 0 : rng_.range(1, 6);
    Val idx = index_vector(n, x.shape[0]);
    push(idx).uses++;
    Shape s = x.shape;
    s[0] = n;
    push(finish(take(x.var, idx.var), {&x, &idx}, x.lo, x.hi, true, true, true, s));
  }

  void one_hot_op() {
    const std::int64_t k = rng_.range(2, 6);
    Val labels = new_leaf(rng_.chance(0.5) ? Dtype::Int64 : Dtype::Int32, {random_dim()},
                          std::pair{0.0, static_cast<double>(k - 1)});
    push(labels).uses++;
    const Dtype dt = rng_.pick({Dtype::Float32, Dtype::Float64, Dtype::Int32});
    push(finish(one_hot(labels.var, k, dt), {&labels}, 0, 1, true, true, true,
                {labels.shape[0], k}));
  }

  void inc_op() {
    auto xo = pick(
        [](const Val& v) { return v.ndim() >= 1 && v.numel() > 0 && v.dtype() != Dtype::Bool; });
    if (!xo) return;
    const Val x = *xo;
    if (rng_.chance(0.3)) {  // inc_rows
      const std::int64_t n = rng_.range(1, 5);
      Val idx = index_vector(n, x.shape[0]);
      push(idx).uses++;
      Shape ys = x.shape;
      ys[0] = n;
      Val y = bounded(of_shape(
                          ys, [&](Dtype d) { return d == x.dtype(); }, x.dtype()),
                      5);
      // Repeated indices accumulate: up to n additions per row.
      const double m = x.mag() + static_cast<double>(n) * y.mag();
      if (!int_ok(x.dtype(), -m, m)) return;
      push(finish(inc_rows(x.var, idx.var, y.var), {&x, &idx, &y}, -m, m, !x.is_float_v(),
                  !x.is_float_v(), true, x.shape));
      return;
    }
    // Constant-bound index on the leading axis (slice or integer).
    const std::int64_t dim = x.shape[0];
    std::vector<IndexEntry> index;
    Shape ys;
    if (rng_.chance(0.3)) {
      index.emplace_back(Variable(rng_.range(-dim, dim - 1)));
    } else {
      std::optional<std::int64_t> st, sp, step;
      if (rng_.chance(0.6)) st = rng_.range(-dim, dim);
      if (rng_.chance(0.6)) sp = rng_.range(-dim, dim);
      if (rng_.chance(0.4)) step = rng_.pick<std::int64_t>({2, -1, 3});
      ys.push_back(slice_length(st, sp, step, dim));
      auto opt = [](std::optional<std::int64_t> v) {
        return v ? std::optional<Variable>(Variable(*v)) : std::nullopt;
      };
      index.emplace_back(Slice(opt(st), opt(sp), opt(step)));
    }
    ys.insert(ys.end(), x.shape.begin() + 1, x.shape.end());
    Val y = of_shape(
        ys, [&](Dtype d) { return d == x.dtype(); }, x.dtype());
    y = bounded(y, 5);
    const bool set = rng_.chance(0.5);
    Variable out = set ? set_subtensor(x.var, index, y.var) : inc_subtensor(x.var, index, y.var);
    const double lo = set ? std::min(x.lo, y.lo) : x.lo + std::min(0.0, y.lo);
    const double hi = set ? std::max(x.hi, y.hi) : x.hi + std::max(0.0, y.hi);
    if (!int_ok(x.dtype(), lo, hi)) return;
    push(finish(out, {&x, &y}, lo, hi, set || !x.is_float_v(),
                set || !x.is_float_v() || (x.exact && y.exact), true, x.shape));
  }

  void softmax_op() {
    auto xo = pick([](const Val& v) {
      return (v.ndim() == 1 || v.ndim() == 2) && v.numel() > 0 && v.shape.back() > 0 &&
             v.dtype() != Dtype::Bool;
    });
    if (!xo) return;
    Val x = bounded(to_float(*xo), 8);
    const double spread = x.hi - x.lo;
    const double logn = std::log(static_cast<double>(x.shape.back()));
    switch (rng_.irange(0, 6)) {
      case 0:
        push(finish(nnet::softmax(x.var), {&x}, std::exp(-spread) / x.shape.back(), 1, false, false,
                    true, x.shape));
        return;
      case 1:
        push(
            finish(nnet::log_softmax(x.var), {&x}, -spread - logn, 0, false, false, true, x.shape));
        return;
      case 2:  // log(softmax(x)): the stabilize rewrite makes it log_softmax
        push(finish(log(nnet::softmax(x.var)), {&x}, -spread - logn, 0, false, false, true,
                    x.shape));
        c_.features.push_back("log_softmax");
        return;
      case 3: {  // categorical cross-entropy with float targets (composition or op)
        Variable p = nnet::softmax(x.var);
        const double m = static_cast<double>(x.shape.back()) * (spread + logn);
        if (rng_.chance(0.4)) {
          Val y = of_shape(
              x.shape, [&](Dtype d) { return d == x.dtype(); }, x.dtype(), std::pair{0.0, 1.0});
          Shape s(x.shape.begin(), x.shape.end() - 1);
          push(finish(nnet::categorical_crossentropy(p, y.var), {&x, &y}, 0, m, false, false, true,
                      s));
          c_.features.push_back("xent_float");
          return;
        }
        // The composition spelled in the ways users write it: targets that broadcast (the
        // rewrite must leave those), either operand order, log_softmax, any summed axis.
        Val y = rng_.chance(0.6) ? of_shape(
                                       x.shape, [&](Dtype d) { return d == x.dtype(); }, x.dtype(),
                                       std::pair{0.0, 1.0})
                                 : [&] {
                                     Val v = partner_leaf(x, x.dtype(), std::pair{0.0, 1.0});
                                     push(v).uses++;
                                     return v;
                                   }();
        auto bs = broadcast({&x, &y});
        if (!bs) return;
        Variable lp = rng_.chance(0.3) ? nnet::log_softmax(x.var) : log(p);
        Variable prodv = rng_.chance(0.5) ? mul(y.var, lp) : mul(lp, y.var);
        const int rank = static_cast<int>(bs->size());
        int axis = rank - 1;
        if (rank == 2 && rng_.chance(0.25)) axis = 0;
        const int spelled = rng_.chance(0.5) ? axis - rank : axis;
        Variable out = neg(sum(prodv, spelled));
        Shape s = *bs;
        s.erase(s.begin() + axis);
        push(finish(out, {&x, &y}, 0, m * 16, false, false, true, s));
        c_.features.push_back("xent_composed");
        return;
      }
      case 4: {  // integer labels
        if (x.ndim() != 2 || x.shape[0] == 0) return unary_math();
        Val labels = index_vector(x.shape[0], x.shape.back(), false);
        push(labels).uses++;
        Variable out = nnet::categorical_crossentropy(nnet::softmax(x.var), labels.var);
        push(finish(out, {&x, &labels}, 0, spread + logn, false, false, true, {x.shape[0]}));
        c_.features.push_back("xent_labels");
        return;
      }
      case 5: {  // gradient of a weighted log-softmax w.r.t. its logits (softmax_grad_div)
        Val w = partner(
            x, [](const Val& v) { return v.is_float_v(); }, x.dtype(), std::pair{-1.0, 1.0});
        auto bs = broadcast({&x, &w});
        if (!bs || *bs != x.shape) return;
        Variable lp = rng_.chance(0.5) ? log(nnet::softmax(x.var)) : nnet::log_softmax(x.var);
        Variable cost = rng_.chance(0.5) ? sum(mul(w.var, lp)) : neg(mean(sum(mul(lp, w.var), -1)));
        Variable g = grad(cost, x.var);
        const double wm = std::max(1.0, w.mag()) * static_cast<double>(x.shape.back() + 1);
        push(finish(g, {&x, &w}, -wm, wm, false, false, true, x.shape));
        c_.features.push_back("grad_log_softmax");
        return;
      }
      default: {  // binary cross-entropy of a sigmoid
        Val z = bounded(x, 4);
        Val t = of_shape(
            z.shape, [&](Dtype d) { return d == z.dtype(); }, z.dtype(), std::pair{0.0, 1.0});
        Variable out = nnet::binary_crossentropy(nnet::sigmoid(z.var), t.var);
        push(finish(out, {&z, &t}, 0, 5, false, false, true, z.shape));
        return;
      }
    }
  }

  // Shapes of graph the canonicalize rewrites look for.
  void canonical_pattern() {
    auto xo = pick([&](const Val& v) { return numeric(v); });
    if (!xo) return;
    const Val x = *xo;
    switch (rng_.irange(0, 4)) {
      case 0:  // -(-x)
        push(finish(neg(neg(x.var)), {&x}, x.lo, x.hi, true, true, true, x.shape));
        return;
      case 1: {  // x - (-y), x + (-y), (-y) + x
        Val y = partner(
            x, [&](const Val& v) { return numeric(v); }, x.dtype());
        auto s = broadcast({&x, &y});
        if (!s) return;
        const int form = rng_.irange(0, 2);
        Variable out = form == 0   ? sub(x.var, neg(y.var))
                       : form == 1 ? add(x.var, neg(y.var))
                                   : add(neg(y.var), x.var);
        // -y of a uint8 wraps around (numpy: -uint8(8) == 248) before any widening.
        const double wrap = y.dtype() == Dtype::UInt8 ? 255 : 0;
        const double lo = (form == 0 ? x.lo + y.lo : x.lo - y.hi) - wrap;
        const double hi = (form == 0 ? x.hi + y.hi : x.hi - y.lo) + wrap;
        if (!int_ok(out.dtype(), lo, hi)) return;
        const bool f = is_float(out.dtype());
        push(finish(out, {&x, &y}, lo, hi, !f, !f || (x.exact && y.exact), true, *s));
        return;
      }
      case 2: {  // x / c for a float constant c (scalar or tensor)
        if (!x.is_float_v()) return;
        if (rng_.chance(0.5)) {
          const double c = rng_.pick({2.0, 0.5, 3.0, -4.0, 10.0, 1.0});
          push(finish(true_div(x.var, Variable(c)), {&x}, std::min(x.lo / c, x.hi / c),
                      std::max(x.lo / c, x.hi / c), false, false, true, x.shape));
        } else {
          // A constant partner (not an input) is what the rewrite folds.
          Val cc = new_leaf(x.dtype(), partner_shape(x), std::pair{0.5, 2.0}, LeafKind::Constant);
          auto s = broadcast({&x, &cc});
          if (!s) return;
          auto [lo, hi] =
              corners([](double a, double b) { return a / b; }, x.lo, x.hi, cc.lo, cc.hi);
          push(finish(true_div(x.var, cc.var), {&x, &cc}, lo, hi, false, false, true, *s));
        }
        return;
      }
      case 3: {  // neutral elements with broadcasting: x * ones, x + zeros
        const double one = rng_.chance(0.5) ? 1.0 : 0.0;
        Val zc;
        zc.var = constant(Tensor::full(partner_shape(x), one, x.dtype()), fresh("c"));
        zc.shape = zc.var.type().shape;
        zc.lo = zc.hi = one;
        zc.leaf = true;
        auto s = broadcast({&x, &zc});
        if (!s) return;
        Variable out = zc.lo == 1.0 ? mul(x.var, zc.var) : add(zc.var, x.var);
        push(finish(out, {&x, &zc}, x.lo, x.hi, true, true, true, *s));
        return;
      }
      default: {  // x - 0, x / 1
        Variable out = x.is_float_v() && rng_.chance(0.5) ? true_div(x.var, Variable(1.0))
                                                          : sub(x.var, Variable(0));
        if (out.dtype() != x.dtype()) return;
        push(finish(out, {&x}, x.lo, x.hi, true, true, true, x.shape));
        return;
      }
    }
  }

  // A matrix operand of shape (r, c) for a product, possibly given transposed: (X, trans)
  // with X of shape (c, r) when trans, read through .T / transpose / dimshuffle.
  Val product_operand(std::int64_t r, std::int64_t c, Dtype dt) {
    const bool trans = rng_.chance(0.4);
    Val x = of_shape(
        trans ? Shape{c, r} : Shape{r, c}, [&](Dtype d) { return d == dt; }, dt);
    x = bounded(x, 3);
    if (!trans) return x;
    Variable t;
    switch (rng_.irange(0, 2)) {
      case 0:
        t = x.var.T();
        break;
      case 1:
        t = transpose(x.var);
        break;
      default:
        t = dimshuffle(x.var, {1, 0});
        break;
    }
    return finish(t, {&x}, x.lo, x.hi, true, true, true, {r, c});
  }

  // A 0-d or all-broadcastable scalar factor: literal, scalar input or shared, (1, 1)
  // tensor, or a product/negation of those. `value` bounds its magnitude.
  Val scalar_factor(Dtype dt, int rank) {
    const double v = rng_.pick({0.5, -1.0, 2.0, 0.25, -0.75});
    Val f;
    switch (rng_.irange(0, 4)) {
      case 0:
        f.var = Variable(v);
        f.lo = f.hi = v;
        f.leaf = true;
        return f;
      case 1:
        f = new_leaf(dt, {}, std::pair{-1.0, 1.0},
                     rng_.chance(0.7) ? LeafKind::Input : LeafKind::Shared);
        push(f).uses++;
        return f;
      case 2: {
        f = new_leaf(dt, Shape(rank, 1), std::pair{-1.0, 1.0},
                     rng_.chance(0.5) ? LeafKind::Constant : LeafKind::Input);
        // Its size-1 dims must be broadcastable for the product to keep its shape.
        if (f.var.node()->kind == NodeKind::Input) {
          std::vector<Tensor> vals = input_values_[f.var.node().get()];
          input_values_.erase(f.var.node().get());
          f.var = tensor(dt, Shape(rank, 1), f.var.name());
          input_values_[f.var.node().get()] = std::move(vals);
        }
        push(f).uses++;
        return f;
      }
      case 3: {
        Val a = scalar_factor(dt, 0);
        return finish(neg(a.var), {&a}, -a.hi, -a.lo, true, true, true, a.shape);
      }
      default: {
        Val a = scalar_factor(dt, 0), b = scalar_factor(dt, 0);
        auto [lo, hi] = corners([](double x, double y) { return x * y; }, a.lo, a.hi, b.lo, b.hi);
        return finish(mul(a.var, b.var), {&a, &b}, lo, hi, false, false, true, {});
      }
    }
  }

  // `term` scaled by `f` in one of the spellings the gemm rewrite decomposes.
  Val scaled(const Val& term, const Val& f) {
    Variable out;
    switch (rng_.irange(0, 3)) {
      case 0:
        out = mul(f.var, term.var);
        break;
      case 1:
        out = mul(term.var, f.var);
        break;
      case 2:
        out = neg(mul(f.var, term.var));
        break;
      default:
        out = mul(f.var, neg(term.var));
        break;
    }
    auto [lo, hi] =
        corners([](double x, double y) { return x * y; }, term.lo, term.hi, -f.mag(), f.mag());
    auto s = broadcast({&term, &f});
    return finish(out, {&term, &f}, lo, hi, false, false, true, s ? *s : term.shape);
  }

  // alpha * dot(op(A), op(B)) + beta * C in its many spellings (and near misses: C that
  // broadcasts, a product read twice, mixed dtypes), which the gemm passes must get right.
  void gemm_pattern() {
    const Dtype dt = random_float();
    const std::int64_t m = random_dim(), k = random_dim(), n = random_dim();
    Val a = product_operand(m, k, dt);
    Val b = product_operand(k, n, dt);
    Val prod = finish(dot(a.var, b.var), {&a, &b}, -9.0 * k, 9.0 * k, false, false, true, {m, n});
    if (rng_.chance(0.15)) {  // the product also read elsewhere: no fusion into a gemm
      push(prod).uses = 0;
    }
    Val term = prod;
    if (rng_.chance(0.6)) term = scaled(prod, scalar_factor(dt, rng_.chance(0.3) ? 2 : 0));
    if (rng_.chance(0.1)) {  // x / c: canonicalize makes it a product by 1/c first
      const double cst = rng_.pick({2.0, -4.0, 0.5});
      term = finish(true_div(term.var, Variable(cst)), {&term}, -term.mag() / std::abs(cst),
                    term.mag() / std::abs(cst), false, false, true, term.shape);
    }
    // The accumulator: a matrix like the product, another product, or a broadcasting one.
    Val cacc;
    const int ck = static_cast<int>(rng_.weighted({5, 1.5, 1, 1}));
    if (ck == 0) {
      const Dtype cdt = rng_.chance(0.85) ? dt : random_float();
      cacc = bounded(of_shape(
                         {m, n}, [&](Dtype d) { return d == cdt; }, cdt),
                     5);
    } else if (ck == 1) {
      Val a2 = product_operand(m, k, dt), b2 = product_operand(k, n, dt);
      cacc = finish(dot(a2.var, b2.var), {&a2, &b2}, -9.0 * k, 9.0 * k, false, false, true, {m, n});
    } else if (ck == 2) {
      cacc = new_leaf(dt, rng_.chance(0.5) ? Shape{n} : Shape{1, n}, std::pair{-1.0, 1.0});
      if (cacc.ndim() == 2 && cacc.var.node()->kind == NodeKind::Input) {
        std::vector<Tensor> vals = input_values_[cacc.var.node().get()];
        input_values_.erase(cacc.var.node().get());
        cacc.var = tensor(dt, Shape{1, rng_.chance(0.5) ? n : kUnknownDim}, cacc.var.name());
        input_values_[cacc.var.node().get()] = std::move(vals);
      }
      push(cacc).uses++;
    } else {
      cacc.var = Variable(rng_.pick({1.0, -0.5, 0.0}));
      cacc.lo = cacc.hi = cacc.var.node()->value.item<double>();
      cacc.leaf = true;
    }
    if (rng_.chance(0.4)) cacc = scaled(cacc, scalar_factor(dt, 0));
    auto s = broadcast({&term, &cacc});
    if (!s) return;
    Variable out;
    switch (rng_.irange(0, 3)) {
      case 0:
        out = add(term.var, cacc.var);
        break;
      case 1:
        out = add(cacc.var, term.var);
        break;
      case 2:
        out = sub(cacc.var, term.var);
        break;
      default:
        out = sub(term.var, cacc.var);
        break;
    }
    push(finish(out, {&term, &cacc}, -(term.mag() + cacc.mag()), term.mag() + cacc.mag(), false,
                false, true, *s));
    c_.features.push_back("gemm_pattern");
  }

  // ---------------------------------------------------------------- training patterns

  // A learning rate: literal, float scalar input (per call), or shared scalar.
  Val learning_rate(Dtype dt, double lr) {
    switch (rng_.irange(0, 2)) {
      case 0: {
        Val v;
        v.var = Variable(lr);
        v.lo = v.hi = lr;
        v.leaf = true;
        return v;
      }
      case 1: {
        Val v = new_leaf(dt, {}, std::pair{lr / 2, lr}, LeafKind::Input);
        push(v).uses++;
        return v;
      }
      default: {
        Val v = new_leaf(dt, {}, std::pair{lr / 2, lr}, LeafKind::Shared);
        push(v).uses++;
        return v;
      }
    }
  }

  // Softmax regression (optionally with a tanh hidden layer) trained by SGD: the
  // tutorial's graph, where stabilize (crossentropy_softmax, softmax_grad_div) and
  // specialize (gemm, gemm_inplace) fire.
  void model_step() {
    const Dtype dt = random_float();
    const std::int64_t m = rng_.pick<std::int64_t>({2, 3, 5, 8, 16});
    const std::int64_t n = rng_.range(2, 6);
    const std::int64_t k = rng_.range(2, 5);
    const double lr = rng_.pick({0.05, 0.1, 0.5});
    const bool momentum = rng_.chance(0.3);
    // Weights' growth over the calls (momentum accumulates: up to calls^2 steps).
    const double budget = 0.3 + (momentum ? c_.calls * c_.calls : c_.calls) * lr * 2;
    Val X;
    if (rng_.chance(0.3)) {
      // Minibatch idiom: X := data[i*m:(i+1)*m] through givens, data a shared dataset.
      const std::int64_t batches = 3;
      Variable Xin = tensor(dt, Shape{kUnknownDim, n}, fresh("X"));
      Val data = new_leaf(dt, {m * batches, n}, std::pair{-1.0, 1.0}, LeafKind::Shared);
      std::vector<std::int64_t> idx;
      for (int c = 0; c < c_.calls; ++c) idx.push_back(rng_.range(0, batches - 1));
      Variable i = scalar_input(idx);
      Variable lo_b = mul(i, Variable(m));
      Variable hi_b = mul(add(i, Variable(1)), Variable(m));
      c_.givens.push_back({Xin, subtensor(data.var, {Slice(lo_b, hi_b)})});
      X.var = Xin;
      X.shape = {m, n};
      X.lo = -1, X.hi = 1;
      X.leaf = true;
      c_.features.push_back("givens_minibatch");
    } else {
      X = new_leaf(dt, {m, n}, std::pair{-1.0, 1.0}, LeafKind::Input);
    }
    push(X).uses++;
    Val W = new_leaf(dt, {n, k}, std::pair{-0.3, 0.3}, LeafKind::Shared);
    Val b = new_leaf(dt, {k}, std::pair{-0.1, 0.1}, LeafKind::Shared);
    // Trained by rounded updates: not bit-identical across backends after the first call.
    W.stable = W.exact = b.stable = b.exact = false;
    W.lo = b.lo = -budget, W.hi = b.hi = budget;
    push(W).uses++;
    push(b).uses++;
    std::vector<Variable> params{W.var, b.var};
    Variable h = X.var;
    std::int64_t hn = n;
    if (rng_.chance(0.3)) {  // hidden layer
      const std::int64_t hid = rng_.range(2, 5);
      Val W1 = new_leaf(dt, {n, hid}, std::pair{-0.5, 0.5}, LeafKind::Shared);
      W1.stable = W1.exact = false;
      W1.lo = -budget - 0.5, W1.hi = budget + 0.5;
      push(W1).uses++;
      h = tanh(dot(X.var, W1.var));
      hn = hid;
      params.push_back(W1.var);
      c_.features.push_back("hidden_layer");
      // W's shape depends on the hidden size: rebuild W.
      Val W2 = new_leaf(dt, {hn, k}, std::pair{-0.3, 0.3}, LeafKind::Shared);
      W2.stable = W2.exact = false;
      W2.lo = -budget, W2.hi = budget;
      push(W2).uses++;
      params[0] = W2.var;
      W = W2;
    }
    Variable z = rng_.chance(0.5) ? add(dot(h, W.var), b.var) : add(b.var, dot(h, W.var));
    const double zm = static_cast<double>(hn) * std::max(1.0, 1.0) * W.mag() + b.mag();
    Variable p = nnet::softmax(z);
    Val y = index_vector(m, k, false);
    push(y).uses++;
    Variable cost;
    switch (rng_.irange(0, 2)) {
      case 0:
        cost = mean(nnet::categorical_crossentropy(p, y.var));
        c_.features.push_back("model_xent_labels");
        break;
      case 1:
        cost = mean(nnet::categorical_crossentropy(p, one_hot(y.var, k, dt)));
        c_.features.push_back("model_xent_onehot");
        break;
      default:
        cost = neg(mean(sum(mul(one_hot(y.var, k, dt), log(p)), 1)));
        c_.features.push_back("model_xent_composed");
        break;
    }
    if (rng_.chance(0.3)) cost = add(cost, mul(Variable(0.01), sum(sqr(W.var))));
    std::vector<Variable> grads = grad(cost, params);
    // Theano's SGD: p <- p - lr * g (several spellings, all gemm candidates for matrices).
    Val lrv = learning_rate(dt, lr);
    for (std::size_t i = 0; i < params.size(); ++i) {
      Variable upd;
      if (i == 0 && momentum) {
        // v <- 0.9 v - lr g; W <- W + v_new: both updates read the old v and W, so an
        // in-place update of one must not be seen by the other.
        Val v = new_leaf(dt, W.shape, std::pair{0.0, 0.0}, LeafKind::Shared);
        Variable v_new = sub(mul(Variable(0.9), v.var), mul(lrv.var, grads[0]));
        if (v_new.dtype() != dt) v_new = cast(v_new, dt);
        c_.updates.push_back({v.var, v_new});
        updated_.insert(v.var.node().get());
        upd = add(params[0], v_new);
        c_.updates.push_back({params[0], upd});
        updated_.insert(params[0].node().get());
        c_.features.push_back("momentum");
        continue;
      }
      switch (rng_.irange(0, 2)) {
        case 0:
          upd = sub(params[i], mul(lrv.var, grads[i]));
          break;
        case 1:
          upd = sub(params[i], mul(grads[i], lrv.var));
          break;
        default:
          upd = add(params[i], mul(neg(lrv.var), grads[i]));
          break;
      }
      if (upd.dtype() != params[i].dtype()) upd = cast(upd, params[i].dtype());
      c_.updates.push_back({params[i], upd});
      updated_.insert(params[i].node().get());
    }
    c_.features.push_back("model_sgd");
    Val costv = finish(cost, {&X, &W, &b, &y}, 0, 2 * zm + std::log(static_cast<double>(k)) + 1,
                       false, false, true, {});
    costv.uses = 1;  // already an output
    push(costv);
    Val zv = finish(z, {&X, &W, &b}, -zm, zm, false, false, true, {m, k});
    push(zv);
    push(finish(p, {&zv}, 0, 1, false, false, true, {m, k}));
    c_.outputs.push_back(cost);
    c_.output_shapes.push_back({});
    c_.output_mags.push_back(costv.hi);
    if (rng_.chance(0.5)) {
      // Prediction with a margin so that argmax is decided the same way everywhere:
      // argmax(softmax(z + 30 * onehot(y))) == y, and argmax_softmax rewrites it.
      Variable zz = add(z, mul(Variable(30.0), one_hot(y.var, k, dt)));
      Variable pred = argmax(nnet::softmax(zz), 1);
      Variable err = mean(neq(pred, y.var));
      c_.outputs.push_back(rng_.chance(0.5) ? pred : err);
      c_.output_shapes.push_back(c_.outputs.back().ndim() == 1 ? Shape{m} : Shape{});
      c_.output_mags.push_back(static_cast<double>(k));
      c_.features.push_back("argmax_softmax");
    }
    if (rng_.chance(0.4)) {  // a shared variable both read as output and updated
      c_.outputs.push_back(W.var);
      c_.output_shapes.push_back(W.shape);
      c_.output_mags.push_back(budget);
      c_.features.push_back("output_updated_shared");
    }
    if (rng_.chance(0.2)) {  // the gradient also an output: gemm must not swallow it
      c_.outputs.push_back(grads[0]);
      c_.output_shapes.push_back(W.shape);
      c_.output_mags.push_back(10);
    }
  }

  // w <- w - lr * dot(X.T, G) without grad: the in-place gemm update, with readers of w
  // that must run before the gemm overwrites it.
  void sgd_update() {
    const Dtype dt = random_float();
    const std::int64_t m = rng_.range(1, 8), n = rng_.range(1, 6), k = rng_.range(1, 5);
    Val w = new_leaf(dt, {n, k}, std::pair{-1.0, 1.0}, LeafKind::Shared);
    w.stable = w.exact = false;  // updated by a rounded gemm
    Val X = of_shape(
        {m, n}, [&](Dtype d) { return d == dt; }, dt);
    X = bounded(X, 1);
    Val G = of_shape(
        {m, k}, [&](Dtype d) { return d == dt; }, dt);
    G = bounded(G, 1);
    const double lr = std::min(0.1, 1.0 / (c_.calls * static_cast<double>(m)));
    w.lo = -2, w.hi = 2;
    push(w).uses++;
    Val lrv = learning_rate(dt, lr);
    Variable g = rng_.chance(0.8) ? dot(X.var.T(), G.var) : dot(transpose(X.var), G.var);
    Variable upd;
    switch (rng_.irange(0, 3)) {
      case 0:
        upd = sub(w.var, mul(lrv.var, g));
        break;
      case 1:
        upd = sub(w.var, mul(g, lrv.var));
        break;
      case 2:
        upd = add(w.var, mul(neg(lrv.var), g));
        break;
      default:
        upd = add(mul(Variable(0.5), w.var), mul(lrv.var, g));  // beta != 1
        break;
    }
    // neg of a weak literal is a float64 constant: cast back (the gemm pattern is lost then).
    if (upd.dtype() != w.dtype()) upd = cast(upd, w.dtype());
    c_.updates.push_back({w.var, upd});
    updated_.insert(w.var.node().get());
    c_.features.push_back("sgd_gemm");
    // Readers of w: as an output, through a view, or in a computation.
    switch (rng_.irange(0, 3)) {
      case 0:
        c_.outputs.push_back(w.var);
        c_.output_shapes.push_back(w.shape);
        c_.output_mags.push_back(2);
        c_.features.push_back("output_updated_shared");
        break;
      case 1: {
        Variable s = sum(mul(w.var, w.var));
        c_.outputs.push_back(s);
        c_.output_shapes.push_back({});
        c_.output_mags.push_back(4.0 * static_cast<double>(n * k));
        break;
      }
      case 2:
        c_.outputs.push_back(w.var.T());
        c_.output_shapes.push_back({k, n});
        c_.output_mags.push_back(2);
        break;
      default:
        break;  // nothing else reads w: the gemm may run in place
    }
    if (rng_.chance(0.3)) {  // a plain gemm pattern as an output too: a * dot(A, B) + C
      Val C = of_shape(
          {n, k}, [&](Dtype d) { return d == dt; }, dt);
      C = bounded(C, 5);
      Variable out = add(mul(Variable(2.0), dot(X.var.T(), G.var)), C.var);
      c_.outputs.push_back(out);
      c_.output_shapes.push_back({n, k});
      c_.output_mags.push_back(2.0 * static_cast<double>(m) + 5);
      c_.features.push_back("gemm_output");
    }
  }

  // w <- f(w, view of w) where the view reads other positions than the one written
  // (transpose, reversed rows, a broadcast row, a shifted copy, a reduction): a backend
  // that updates w in place inside the loop that reads the view computes garbage.
  void aliased_update() {
    const Dtype dt = random_float();
    const std::int64_t n = rng_.pick<std::int64_t>({2, 3, 4, 7, 17});
    const std::int64_t m = rng_.chance(0.5) ? n : rng_.pick<std::int64_t>({2, 3, 5});
    Val w = new_leaf(dt, {n, m}, std::pair{-1.0, 1.0}, LeafKind::Shared);
    w.stable = w.exact = false;
    push(w).uses++;
    Variable view;
    switch (rng_.irange(0, 5)) {
      case 0:
        if (n != m) return;
        view = rng_.chance(0.5) ? w.var.T() : transpose(w.var);
        break;
      case 1:
        view = subtensor(w.var, {Slice(std::nullopt, std::nullopt, Variable(-1))});
        break;
      case 2:
        view = subtensor(w.var, {Slice(), Slice(std::nullopt, std::nullopt, Variable(-1))});
        break;
      case 3:  // row 0 (a static-1 row) broadcast over all rows
        view = subtensor(w.var, {Slice(Variable(0), Variable(1))});
        break;
      case 4:  // rows shifted by one
        view = concatenate({subtensor(w.var, {Slice(Variable(1), std::nullopt)}),
                            subtensor(w.var, {Slice(std::nullopt, Variable(1))})},
                           0);
        break;
      default:
        view = mean(w.var, 0, /*keepdims=*/true);
        break;
    }
    Variable value;
    if (rng_.chance(0.5))
      value = clip(add(mul(Variable(0.5), w.var), view), Variable(-1.0), Variable(1.0));
    else
      value = tanh(sub(view, mul(w.var, Variable(0.25))));
    if (value.dtype() != dt) value = cast(value, dt);
    c_.updates.push_back({w.var, value});
    updated_.insert(w.var.node().get());
    c_.features.push_back("aliased_update");
    if (rng_.chance(0.3)) {
      c_.outputs.push_back(view);
      c_.output_shapes.push_back(view.type().shape);  // static: w's and the bounds are
      c_.output_mags.push_back(1);
    }
  }

  // d sum(v) / d leaves for a smooth value v.
  void random_grad() {
    auto vo = pick([](const Val& v) {
      return v.is_float_v() && v.grad_safe && !v.leaf && v.numel() > 0 && v.depth >= 1;
    });
    if (!vo) return;
    const Val v = *vo;
    std::vector<Variable> wrt;
    std::set<const Node*> below;
    for (const NodePtr& n : toposort({v.var.node()})) {
      below.insert(n.get());
      if ((n->kind == NodeKind::Input || n->kind == NodeKind::Shared) && is_float(n->type.dtype) &&
          rng_.chance(0.7))
        wrt.push_back(Variable(n));
    }
    // Intermediate values too (the gradient then stops there).
    for (const Val& p : pool_)
      if (!p.leaf && p.is_float_v() && below.count(p.var.node().get()) && rng_.chance(0.2) &&
          !p.var.same_as(v.var))
        wrt.push_back(p.var);
    if (wrt.empty()) return;
    Val vb = bounded(v, 20);
    Variable cost = rng_.chance(0.5) ? sum(vb.var) : mean(vb.var);
    std::vector<Variable> gs = grad(cost, wrt, {.disconnected_inputs = Disconnected::Ignore});
    for (std::size_t i = 0; i < gs.size() && i < 2; ++i) {
      c_.outputs.push_back(gs[i]);
      Shape s;
      for (auto& p : pool_)
        if (p.var.same_as(wrt[i])) s = p.shape;
      if (s.empty() && wrt[i].ndim() > 0) {
        // A leaf created outside the pool (givens target); skip the shape expectation.
        c_.outputs.pop_back();
        continue;
      }
      c_.output_shapes.push_back(s);
      c_.output_mags.push_back(1e3);
    }
    c_.features.push_back("grad");
  }

  // ---------------------------------------------------------------- outputs and updates

  void choose_outputs() {
    std::vector<std::size_t> sinks, others;
    for (std::size_t i = 0; i < pool_.size(); ++i) {
      if (pool_[i].leaf) continue;
      (pool_[i].uses == 0 ? sinks : others).push_back(i);
    }
    const int want = rng_.irange(1, 4);
    std::vector<std::size_t> chosen;
    for (int k = 0; k < want; ++k) {
      std::vector<std::size_t>& from = !sinks.empty() && rng_.chance(0.8) ? sinks : others;
      if (from.empty()) break;
      const std::size_t j = rng_.irange(0, static_cast<int>(from.size()) - 1);
      chosen.push_back(from[j]);
      from.erase(from.begin() + static_cast<std::ptrdiff_t>(j));
    }
    if (rng_.chance(0.05) && !pool_.empty()) chosen.push_back(0);  // a leaf as output
    for (std::size_t i : chosen) {
      c_.outputs.push_back(pool_[i].var);
      c_.output_shapes.push_back(pool_[i].shape);
      c_.output_mags.push_back(pool_[i].mag());
    }
    if (c_.outputs.empty()) {
      Val x = pool_.empty() ? new_leaf(Dtype::Float32, {3}) : pool_[0];
      Variable out = add(x.var, x.var);
      c_.outputs.push_back(out);
      c_.output_shapes.push_back(x.shape);
      c_.output_mags.push_back(2 * x.mag());
    }
  }

  // Updates for shared variables not updated yet; each keeps the variable's range over
  // every call (clip, tanh, or a value already inside it).
  void add_updates() {
    std::vector<Val> shared_vals;
    for (const Val& v : pool_)
      if (v.var.is_shared() && v.leaf && !updated_.count(v.var.node().get()) &&
          std::find_if(shared_vals.begin(), shared_vals.end(),
                       [&](const Val& s) { return s.var.same_as(v.var); }) == shared_vals.end())
        shared_vals.push_back(v);
    for (const Val& w : shared_vals) {
      if (!rng_.chance(0.7) || updated_.count(w.var.node().get())) continue;
      guarded([&] { update_for(w, shared_vals); });
    }
  }

  void update_for(const Val& w, const std::vector<Val>& shared_vals) {
    // Swap with another shared variable of the same type (both updates read old values).
    if (rng_.chance(0.15)) {
      for (const Val& o : shared_vals) {
        if (o.var.same_as(w.var) || o.shape != w.shape || o.dtype() != w.dtype() ||
            updated_.count(o.var.node().get()) || o.lo < w.lo || o.hi > w.hi || w.lo < o.lo ||
            w.hi > o.hi)
          continue;
        c_.updates.push_back({w.var, o.var});
        c_.updates.push_back({o.var, w.var});
        updated_.insert(w.var.node().get());
        updated_.insert(o.var.node().get());
        c_.features.push_back("swap_update");
        return;
      }
    }
    auto v = pick([&](const Val& p) { return broadcasts_to(p, w.shape) && !p.var.same_as(w.var); });
    Variable value;
    if (w.dtype() == Dtype::Bool) {
      if (!v || v->dtype() != Dtype::Bool) return;
      value = logical_or(logical_and(w.var, v->var), logical_not(v->var));
    } else if (!w.is_float_v()) {
      Variable inc = v && is_integer(v->dtype()) && v->exact ? v->var : Variable(1);
      value = clip(add(w.var, inc), Variable(static_cast<std::int64_t>(w.lo)),
                   Variable(static_cast<std::int64_t>(w.hi)));
      if (value.dtype() != w.dtype()) value = cast(value, w.dtype());
    } else {
      Variable src = v ? v->var : Variable(0.5);
      if (v && !is_float(v->dtype())) src = cast(src, w.dtype());
      // A stable w (see new_leaf) keeps stable values: a stable v, or no update.
      if (w.stable && (!v || !v->stable)) return;
      switch (w.stable ? 2 : rng_.irange(0, 2)) {
        case 0:
          value = clip(add(mul(Variable(0.9), w.var), mul(Variable(0.1), src)), Variable(w.lo),
                       Variable(w.hi));
          break;
        case 1: {
          // tanh keeps |value| < 1; scale into the variable's range when it is that wide.
          const double s = std::min(std::abs(w.lo), std::abs(w.hi));
          if (w.lo >= 0 || w.hi <= 0 || s < 0.25) return;
          value = mul(tanh(sub(w.var, src)), Variable(std::min(s, 1.0)));
          break;
        }
        default:
          if (!v || v->lo < w.lo || v->hi > w.hi) return;
          // Within range already; fill() gives it w's exact shape when it broadcasts.
          value = v->shape == w.shape ? v->var : fill(w.var, v->var);
          break;
      }
      if (value.dtype() != w.dtype()) value = cast(value, w.dtype());
    }
    c_.updates.push_back({w.var, value});
    updated_.insert(w.var.node().get());
    if (rng_.chance(0.3)) {
      c_.outputs.push_back(w.var);
      c_.output_shapes.push_back(w.shape);
      c_.output_mags.push_back(w.mag());
      c_.features.push_back("output_updated_shared");
    }
  }

  void collect_inputs() {
    std::vector<NodePtr> roots;
    for (const Variable& o : c_.outputs) roots.push_back(o.node());
    for (const auto& [t, v] : c_.updates) roots.push_back(v.node());
    std::set<const Node*> given;
    for (const auto& [from, to] : c_.givens) {
      given.insert(from.node().get());
      roots.push_back(to.node());
    }
    std::vector<Variable> inputs;
    std::set<const Node*> shared_seen;
    for (const NodePtr& n : toposort(roots)) {
      if (n->kind == NodeKind::Input && !given.count(n.get())) inputs.push_back(Variable(n));
    }
    // Input order is random: backends must not depend on it.
    for (int i = static_cast<int>(inputs.size()) - 1; i > 0; --i)
      std::swap(inputs[i], inputs[rng_.irange(0, i)]);
    c_.inputs = inputs;
    for (int c = 0; c < c_.calls; ++c) {
      c_.call_inputs[c].clear();
      for (const Variable& in : inputs)
        c_.call_inputs[c].push_back(input_values_.at(in.node().get())[c]);
    }
    // Keep only the shared variables the graph reads.
    std::set<const Node*> reachable;
    for (const NodePtr& n : toposort(roots)) reachable.insert(n.get());
    for (const auto& [t, v] : c_.updates) reachable.insert(t.node().get());
    std::vector<Variable> sh;
    std::vector<Tensor> init;
    for (std::size_t i = 0; i < c_.shared.size(); ++i) {
      if (!reachable.count(c_.shared[i].node().get())) continue;
      sh.push_back(c_.shared[i]);
      init.push_back(c_.shared_init[i]);
    }
    c_.shared = sh;
    c_.shared_init = init;
    std::sort(c_.features.begin(), c_.features.end());
    c_.features.erase(std::unique(c_.features.begin(), c_.features.end()), c_.features.end());
  }
};

}  // namespace detail

// The case for `seed`: the same graph and values on every platform and run.
inline FuzzCase make_case(std::uint64_t seed, const GenOptions& options = GenOptions::from_env()) {
  return detail::Generator(seed, options).build();
}

// Several cases as one function (their graphs side by side, all calls of the shortest):
// a compiled backend then pays its fixed compile cost once for the lot. A mismatch in a
// merged case is attributed by re-running its parts one by one.
inline FuzzCase merge_cases(const std::vector<FuzzCase>& parts) {
  FuzzCase m;
  m.seed = parts.empty() ? 0 : parts[0].seed;
  m.calls = 1 << 30;
  for (const FuzzCase& p : parts) m.calls = std::min(m.calls, p.calls);
  m.call_inputs.resize(m.calls);
  for (const FuzzCase& p : parts) {
    m.inputs.insert(m.inputs.end(), p.inputs.begin(), p.inputs.end());
    for (int c = 0; c < m.calls; ++c)
      m.call_inputs[c].insert(m.call_inputs[c].end(), p.call_inputs[c].begin(),
                              p.call_inputs[c].end());
    m.outputs.insert(m.outputs.end(), p.outputs.begin(), p.outputs.end());
    m.output_shapes.insert(m.output_shapes.end(), p.output_shapes.begin(), p.output_shapes.end());
    m.output_mags.insert(m.output_mags.end(), p.output_mags.begin(), p.output_mags.end());
    m.updates.insert(m.updates.end(), p.updates.begin(), p.updates.end());
    m.givens.insert(m.givens.end(), p.givens.begin(), p.givens.end());
    m.shared.insert(m.shared.end(), p.shared.begin(), p.shared.end());
    m.shared_init.insert(m.shared_init.end(), p.shared_init.begin(), p.shared_init.end());
    m.features.insert(m.features.end(), p.features.begin(), p.features.end());
    m.skipped.insert(m.skipped.end(), p.skipped.begin(), p.skipped.end());
  }
  return m;
}

// ---------------------------------------------------------------- running and comparing

struct Tolerance {
  double rtol32 = 1e-4, atol32 = 1e-4;  // atol is scaled by max(1, max |expected|)
  double rtol64 = 1e-9, atol64 = 1e-9;
};

struct CallRecord {
  std::vector<Tensor> outputs;  // clones taken right after the call
  std::vector<Tensor> shared;   // every shared variable's value after the call
};

struct RunResult {
  std::string error;  // exception text when compile or a call threw
  std::string label;  // "reference", "cpu (rewrites excluded: ...)"
  std::vector<CallRecord> calls;
  std::vector<std::string> problems;  // aliasing, destroyed inputs, wrong shapes
  std::vector<std::string> ops;       // op str() of every apply node after rewrites
  std::string debugprint;             // the optimized graph and the program
  std::size_t kernels = 0;
};

inline std::string options_label(const FunctionOptions& o) {
  std::string s = o.backend.empty() ? default_backend_name() : o.backend;
  if (!o.exclude.empty()) {
    s += " (excluding";
    for (const std::string& e : o.exclude) s += " " + e;
    s += ")";
  }
  return s;
}

namespace detail {
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i] || (std::isnan(x[i]) && std::isnan(y[i])))) return false;
  return true;
}
}  // namespace detail

// A compiled case: how to call it, and what to show about it.
struct Compiled {
  std::function<std::vector<Tensor>(const std::vector<Tensor>&)> call;
  std::vector<std::string> ops;  // op str() of every apply node after rewrites
  std::string debugprint;
  std::size_t kernels = 0;
};

// Resets the shared variables, compiles with `compile` and runs every call, recording
// outputs and shared values, and checking that inputs are not modified, shapes and dtypes
// are the graph's, and results stay valid after later calls.
inline RunResult run_compiled(const FuzzCase& c, const std::string& label,
                              const std::function<Compiled()>& compile) {
  RunResult r;
  r.label = label;
  for (std::size_t i = 0; i < c.shared.size(); ++i) {
    Variable s = c.shared[i];
    s.set_value(c.shared_init[i]);
  }
  try {
    Compiled f = compile();
    r.ops = f.ops;
    r.debugprint = f.debugprint;
    r.kernels = f.kernels;
    std::vector<std::vector<Tensor>> held;
    for (int call = 0; call < c.calls; ++call) {
      std::vector<Tensor> args;
      for (const Tensor& t : c.call_inputs[call]) args.push_back(t.clone());
      std::vector<Tensor> outs = f.call(args);
      CallRecord rec;
      for (const Tensor& t : outs) rec.outputs.push_back(t.clone());
      for (const Variable& s : c.shared) rec.shared.push_back(s.get_value().clone());
      for (std::size_t i = 0; i < args.size(); ++i)
        if (!detail::same_bits(args[i], c.call_inputs[call][i]))
          r.problems.push_back("call " + std::to_string(call) + " modified input " +
                               c.inputs[i].describe());
      if (outs.size() != c.outputs.size())
        r.problems.push_back("call " + std::to_string(call) + " returned " +
                             std::to_string(outs.size()) + " outputs, expected " +
                             std::to_string(c.outputs.size()));
      for (std::size_t i = 0; i < outs.size() && i < c.outputs.size(); ++i) {
        if (outs[i].shape() != c.output_shapes[i])
          r.problems.push_back("call " + std::to_string(call) + ": output " + std::to_string(i) +
                               " has shape " + shape_str(outs[i].shape()) +
                               " but the graph gives " + shape_str(c.output_shapes[i]));
        if (outs[i].dtype() != c.outputs[i].dtype())
          r.problems.push_back("call " + std::to_string(call) + ": output " + std::to_string(i) +
                               " has dtype " + dtype_name(outs[i].dtype()) + ", its type says " +
                               dtype_name(c.outputs[i].dtype()));
      }
      held.push_back(std::move(outs));
      r.calls.push_back(std::move(rec));
    }
    // Results handed to the user stay valid: a later call must not overwrite them.
    for (std::size_t call = 0; call < held.size(); ++call)
      for (std::size_t i = 0; i < held[call].size(); ++i)
        if (!detail::same_bits(held[call][i], r.calls[call].outputs[i]))
          r.problems.push_back("output " + std::to_string(i) + " of call " + std::to_string(call) +
                               " was overwritten by a later call (it aliases a buffer the "
                               "program reuses)");
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

// Compiles the case with function(..., options) and runs every call.
inline RunResult run_case(const FuzzCase& c, const FunctionOptions& options) {
  return run_compiled(c, options_label(options), [&] {
    FunctionOptions o = options;
    if (o.name.empty()) o.name = "fuzz_" + std::to_string(c.seed);
    Function f = function(c.inputs, c.outputs, c.updates, c.givens, o);
    Compiled out;
    for (const NodePtr& n : f.graph().toposort())
      if (n->kind == NodeKind::Apply) out.ops.push_back(n->op->str());
    out.debugprint = f.debugprint();
    out.kernels = f.kernel_count();
    out.call = [f](const std::vector<Tensor>& args) mutable { return f(args); };
    return out;
  });
}

// The case's FunctionGraph after the default rewrites (minus `exclude`) and
// expand_row_ops (softmax & co. as Elemwise + Reduce), compiled by `backend` directly:
// what a backend whose fuser prefers primitives runs.
inline RunResult run_expanded(const FuzzCase& c, const std::string& backend,
                              const std::vector<std::string>& exclude = {}) {
  FunctionOptions label_opts;
  label_opts.backend = backend;
  label_opts.exclude = exclude;
  return run_compiled(c, options_label(label_opts) + " + expand_row_ops", [&] {
    std::vector<NodePtr> ins, outs;
    std::vector<UpdatePair> ups;
    std::vector<std::pair<NodePtr, NodePtr>> givens;
    for (const Variable& v : c.inputs) ins.push_back(v.node());
    for (const Variable& v : c.outputs) outs.push_back(v.node());
    for (const auto& [t, v] : c.updates) ups.push_back({t.node(), v.node()});
    for (const auto& [from, to] : c.givens) givens.emplace_back(from.node(), to.node());
    auto fg = std::make_shared<FunctionGraph>(ins, outs, ups, givens);
    run_rewrites(*fg, exclude);
    expand_row_ops(*fg);
    std::shared_ptr<Program> program = get_backend(backend)->compile(*fg);
    Compiled out;
    for (const NodePtr& n : fg->toposort())
      if (n->kind == NodeKind::Apply) out.ops.push_back(n->op->str());
    out.debugprint = debugprint(fg->roots()) + program->describe();
    out.kernels = program->kernel_count();
    out.call = [fg, program](const std::vector<Tensor>& args) { return program->run(args); };
    return out;
  });
}

struct Outcome {
  bool ok = true;
  std::string message;  // on failure: seed, what differs, the case and both programs
  RunResult a, b;
};

namespace detail {

inline std::string index_str(std::int64_t flat, const Shape& shape) {
  std::vector<std::int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] == 0) break;
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  std::string s = "[";
  for (std::size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

// Empty when close; else the first differing element.
// Which values only have float32 precision: float32 rounding happened below them, in this
// call or (through a shared variable's update) in an earlier one. Returns the flags for
// the outputs and for the shared variables of `c`.
inline std::pair<std::vector<bool>, std::vector<bool>> float32_precision(const FuzzCase& c) {
  std::set<const Node*> loose_shared;
  auto below = [&](const NodePtr& root) {
    std::vector<NodePtr> roots{root};
    for (const auto& [from, to] : c.givens) roots.push_back(to.node());
    for (const NodePtr& n : toposort(roots))
      if (n->type.dtype == Dtype::Float32 || loose_shared.count(n.get())) return true;
    return false;
  };
  for (bool changed = true; changed;) {  // to a fixpoint: updates may read each other
    changed = false;
    for (const auto& [t, v] : c.updates)
      if (!loose_shared.count(t.node().get()) && below(v.node())) {
        loose_shared.insert(t.node().get());
        changed = true;
      }
  }
  std::vector<bool> outs, shared;
  for (const Variable& o : c.outputs) outs.push_back(below(o.node()));
  for (const Variable& v : c.shared) shared.push_back(loose_shared.count(v.node().get()) > 0);
  return {outs, shared};
}

inline std::string compare_tensors(const Tensor& got, const Tensor& want, const Tolerance& tol,
                                   bool float32_precision) {
  if (got.dtype() != want.dtype())
    return std::string("dtype ") + dtype_name(got.dtype()) + " vs " + dtype_name(want.dtype());
  if (got.shape() != want.shape())
    return "shape " + shape_str(got.shape()) + " vs " + shape_str(want.shape());
  const std::vector<double> a = got.to_vector(), b = want.to_vector();
  double scale = 1;
  for (double v : b)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  const bool f32 = want.dtype() == Dtype::Float32 || (is_float(want.dtype()) && float32_precision);
  const bool f64 = want.dtype() == Dtype::Float64;
  const double rtol = f32 ? tol.rtol32 : (f64 ? tol.rtol64 : 0);
  const double atol = (f32 ? tol.atol32 : (f64 ? tol.atol64 : 0)) * scale;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = b[i];
    if (x == y || (std::isnan(x) && std::isnan(y))) continue;
    const double lim = atol + rtol * std::abs(y);
    if (std::isfinite(x) && std::isfinite(y) && std::abs(x - y) <= lim) continue;
    std::ostringstream s;
    s.precision(10);
    s << "element " << index_str(static_cast<std::int64_t>(i), want.shape()) << " of "
      << want.describe() << ": got " << x << ", expected " << y << " (|diff| " << std::abs(x - y)
      << " > tolerance " << lim << ")";
    return s.str();
  }
  return {};
}

}  // namespace detail

// Runs `c` under options `a` (under test) and `b` (the oracle) and compares every output
// and shared value after every call.
inline Outcome compare_runs(const FuzzCase& c, RunResult a, RunResult b,
                            const Tolerance& tol = {}) {
  Outcome out;
  out.a = std::move(a);
  out.b = std::move(b);
  std::string what;
  if (!out.a.error.empty() || !out.b.error.empty()) {
    what = "exception:\n  " + out.a.label + ": " + (out.a.error.empty() ? "ok" : out.a.error) +
           "\n  " + out.b.label + ": " + (out.b.error.empty() ? "ok" : out.b.error);
  }
  for (const RunResult* r : {&out.a, &out.b})
    for (const std::string& p : r->problems)
      if (what.empty()) what = r->label + ": " + p;
  if (what.empty()) {
    const auto [out_f32, shared_f32] = detail::float32_precision(c);
    // The first difference in full; the other differing values of the first bad call by
    // name (which outputs agree narrows a bug down as much as which differ).
    std::vector<std::string> others;
    for (int call = 0; call < c.calls && what.empty(); ++call) {
      const CallRecord& x = out.a.calls[call];
      const CallRecord& y = out.b.calls[call];
      auto note = [&](std::string line) {
        if (what.empty())
          what = std::move(line);
        else
          others.push_back(std::move(line));
      };
      for (std::size_t i = 0; i < x.outputs.size(); ++i) {
        std::string d = detail::compare_tensors(x.outputs[i], y.outputs[i], tol, out_f32[i]);
        if (!d.empty())
          note("call " + std::to_string(call) + ", output " + std::to_string(i) + " (" +
               c.outputs[i].describe() + ")" + (what.empty() ? ": " + d : std::string()));
      }
      for (std::size_t i = 0; i < x.shared.size(); ++i) {
        std::string d = detail::compare_tensors(x.shared[i], y.shared[i], tol, shared_f32[i]);
        if (!d.empty())
          note("after call " + std::to_string(call) + ", shared variable " + c.shared[i].name() +
               (what.empty() ? ": " + d : std::string()));
      }
    }
    if (!others.empty()) {
      what += "\n  also differ:";
      for (std::size_t k = 0; k < others.size() && k < 12; ++k) what += "\n    " + others[k];
      if (others.size() > 12) what += "\n    ... " + std::to_string(others.size() - 12) + " more";
    }
  }
  if (what.empty()) return out;
  out.ok = false;
  std::ostringstream s;
  s << "MISMATCH " << out.a.label << " vs " << out.b.label << " on seed " << c.seed
    << "\n  reproduce: THEA_FUZZ_SEED=" << c.seed << " THEA_FUZZ_COUNT=1"
    << (GenOptions::from_env().max_ops != GenOptions().max_ops
            ? " THEA_FUZZ_MAX_OPS=" + std::to_string(GenOptions::from_env().max_ops)
            : std::string())
    << (GenOptions::from_env().huge ? " THEA_FUZZ_HUGE=1" : "") << " ./test_fuzz\n  " << what
    << "\n"
    << c.describe() << "\n--- " << out.a.label << ":\n"
    << out.a.debugprint << "\n--- " << out.b.label << ":\n"
    << out.b.debugprint;
  out.message = s.str();
  return out;
}

inline Outcome compare_case(const FuzzCase& c, const FunctionOptions& a, const FunctionOptions& b,
                            const Tolerance& tol = {}) {
  return compare_runs(c, run_case(c, a), run_case(c, b), tol);
}

inline Outcome compare_backends(std::uint64_t seed, const FunctionOptions& a,
                                const FunctionOptions& b, const Tolerance& tol = {}) {
  return compare_case(make_case(seed), a, b, tol);
}

// The case without output `i` (or, for i >= outputs, without update i - outputs).
inline FuzzCase without_root(const FuzzCase& c, std::size_t i) {
  FuzzCase t = c;
  if (i < t.outputs.size()) {
    t.outputs.erase(t.outputs.begin() + static_cast<std::ptrdiff_t>(i));
    t.output_shapes.erase(t.output_shapes.begin() + static_cast<std::ptrdiff_t>(i));
    t.output_mags.erase(t.output_mags.begin() + static_cast<std::ptrdiff_t>(i));
  } else {
    t.updates.erase(t.updates.begin() + static_cast<std::ptrdiff_t>(i - t.outputs.size()));
  }
  return t;
}

// A smaller case that still `fails`: outputs and updates are dropped one at a time while
// the failure persists (inputs and shared variables stay; unused ones are harmless). The
// result is usually the one or two values that differ and what they depend on.
inline FuzzCase shrink_case(FuzzCase c, const std::function<bool(const FuzzCase&)>& fails) {
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t i = 0; i < c.outputs.size() + c.updates.size(); ++i) {
      FuzzCase t = without_root(c, i);
      if ((t.outputs.empty() && t.updates.empty()) || !fails(t)) continue;
      c = std::move(t);
      progress = true;
      break;
    }
  }
  return c;
}

// The rewrite tags whose passes the rewrite differential turns off.
inline const std::vector<std::string>& rewrite_tags() {
  static const std::vector<std::string> tags = {"canonicalize", "stabilize", "specialize"};
  return tags;
}

// THEA_FUZZ_SEED / THEA_FUZZ_COUNT with defaults.
inline std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strtoull(v, nullptr, 10);
}

}  // namespace thea::fuzz
