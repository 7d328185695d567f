// Differential testing with random graphs (tests/fuzz/): every available backend against
// the reference backend, the reference backend with the op rewrites against itself
// without them, and the rewritten graph after expand_row_ops. A mismatch prints the seed,
// the graph and the first differing element; reproduce it with
//   THEA_FUZZ_SEED=<seed> THEA_FUZZ_COUNT=1 ./test_fuzz
// Owner: helper "fuzz" (tests/fuzz/README.md). Backend helpers: use the generator from
// your own tests; ask for changes here rather than replacing this file.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thea/thea.hpp>
#include <vector>

#include "fuzz/graph_gen.hpp"
#include "fuzz/regressions.hpp"

using namespace thea;
using fuzz::FuzzCase;
using fuzz::Outcome;

namespace {

constexpr std::uint64_t kDefaultFirstSeed = 1;
constexpr std::uint64_t kDefaultCount = 300;

std::uint64_t first_seed() { return fuzz::env_u64("THEA_FUZZ_SEED", kDefaultFirstSeed); }
std::uint64_t seed_count() { return fuzz::env_u64("THEA_FUZZ_COUNT", kDefaultCount); }
// Wall-clock cap per comparison loop (a slow compiled backend on a loaded machine runs
// fewer graphs instead of timing out; the number run is reported).
double budget_seconds() { return static_cast<double>(fuzz::env_u64("THEA_FUZZ_BUDGET_S", 120)); }
// THEA_FUZZ_BRIEF=1: one line per mismatch (triaging many seeds at once).
bool brief() { return fuzz::env_u64("THEA_FUZZ_BRIEF", 0) != 0; }
// THEA_FUZZ_SHRINK=1: also print each failing case reduced to the outputs and updates that
// still differ.
bool shrink() { return fuzz::env_u64("THEA_FUZZ_SHRINK", 0) != 0; }

// The failure message for case `c` under (a, b), shrunk when THEA_FUZZ_SHRINK is set.
std::string failure_text(const FuzzCase& c, const Outcome& o, const FunctionOptions& a,
                         const FunctionOptions& b) {
  std::string text = brief() ? o.message.substr(0, o.message.find("\nfuzz case")) : o.message;
  if (!shrink()) return text;
  const FuzzCase small =
      fuzz::shrink_case(c, [&](const FuzzCase& t) { return !fuzz::compare_case(t, a, b).ok; });
  return text + "\n--- shrunk to " + std::to_string(small.outputs.size()) + " outputs and " +
         std::to_string(small.updates.size()) + " updates:\n" +
         fuzz::compare_case(small, a, b).message;
}

FunctionOptions opts(const std::string& backend, std::vector<std::string> exclude = {}) {
  FunctionOptions o;
  o.backend = backend;
  o.exclude = std::move(exclude);
  return o;
}

// Test-only backends are named "fuzz-*" and skipped by the all-backends loops.
bool is_test_backend(const std::string& name) { return name.rfind("fuzz-", 0) == 0; }

// Non-reference backends that can run here; the others, with the reason, in `skipped`.
std::vector<std::string> available_backends(std::vector<std::string>* skipped = nullptr) {
  std::vector<std::string> out;
  for (const std::string& name : backend_names()) {
    if (name == "reference" || is_test_backend(name)) continue;
    try {
      get_backend(name);
      out.push_back(name);
    } catch (const BackendError& e) {
      if (skipped) skipped->push_back(name + " (" + e.what() + ")");
    }
  }
  return out;
}

// Op names (without params, except gemm's flags) of an optimized graph.
void count_ops(const std::vector<std::string>& ops, std::map<std::string, int>& into) {
  std::set<std::string> seen;
  for (const std::string& op : ops)
    seen.insert(op.rfind("gemm", 0) == 0 ? op : op.substr(0, op.find('{')));
  for (const std::string& n : seen) into[n]++;
}

struct LoopStats {
  std::uint64_t ran = 0;
  std::vector<std::uint64_t> failed;
  std::map<std::string, int> ops;       // op -> number of graphs containing it
  std::map<std::string, int> features;  // generator feature -> number of graphs
  bool cut_by_budget = false;
  std::uint64_t batches = 0;
};

// Compares `count` seeds from `first` with `compare` (a case -> outcome). Prints the
// first few mismatches in full and lists every failing seed.
template <class Compare>
LoopStats run_seeds(std::uint64_t first, std::uint64_t count, Compare&& compare) {
  LoopStats st;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t k = 0; k < count; ++k) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed > budget_seconds()) {
      st.cut_by_budget = true;
      break;
    }
    const std::uint64_t seed = first + k;
    const FuzzCase c = fuzz::make_case(seed);
    for (const std::string& skip : c.skipped) {
      // The library refused something the generator built: a generator bug (or an op
      // rejecting a valid graph). Either way it must be looked at.
      FAIL_CHECK("seed " << seed << ": the generator built a graph the library refused:\n" << skip);
    }
    const Outcome o = compare(c);
    ++st.ran;
    count_ops(o.a.ops, st.ops);
    for (const std::string& f : c.features) st.features[f]++;
    if (!o.ok) {
      st.failed.push_back(seed);
      if (brief())
        FAIL_CHECK(o.message.substr(0, o.message.find("\nfuzz case")));
      else if (st.failed.size() <= 3)
        FAIL_CHECK(o.message);
    }
  }
  return st;
}

std::string seeds_str(const std::vector<std::uint64_t>& seeds) {
  std::string s;
  for (std::uint64_t x : seeds) {
    if (!s.empty()) s += ' ';
    s += std::to_string(x);
  }
  return s;
}

void report(const std::string& what, const LoopStats& st) {
  MESSAGE(what << ": " << st.ran << " graphs, " << st.failed.size() << " mismatches"
               << std::string(st.cut_by_budget ? " (stopped by THEA_FUZZ_BUDGET_S)" : ""));
  CHECK_MESSAGE(st.failed.empty(), what << ": failing seeds: " << seeds_str(st.failed)
                                        << " (add them to tests/fuzz/regressions.hpp)");
}

// ---- deliberately wrong backends: the harness must notice them ----

// Runs the reference program, then nudges the first element of the first float output
// that has one: a backend with a small numerical bug.
class NudgedProgram : public Program {
 public:
  explicit NudgedProgram(std::unique_ptr<Program> inner) : inner_(std::move(inner)) {}
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) override {
    std::vector<Tensor> outs = inner_->run(inputs);
    for (Tensor& t : outs) {
      if (!is_float(t.dtype()) || t.numel() == 0) continue;
      t = t.clone();
      std::vector<std::int64_t> idx(t.ndim(), 0);
      t.set(idx, t.get(idx) * 1.01 + 1e-2);
      break;
    }
    return outs;
  }
  std::size_t kernel_count() const override { return inner_->kernel_count(); }
  std::string describe() const override { return "nudged\n" + inner_->describe(); }

 private:
  std::unique_ptr<Program> inner_;
};

// Returns the same output buffers on every call: call k's results change under the
// caller's feet at call k + 1.
class ReusingProgram : public Program {
 public:
  explicit ReusingProgram(std::unique_ptr<Program> inner) : inner_(std::move(inner)) {}
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) override {
    std::vector<Tensor> outs = inner_->run(inputs);
    if (kept_.empty())
      for (const Tensor& t : outs) kept_.push_back(t.clone());
    for (std::size_t i = 0; i < outs.size(); ++i) kept_[i].copy_from(outs[i]);
    return kept_;
  }
  std::size_t kernel_count() const override { return inner_->kernel_count(); }
  std::string describe() const override { return "reusing\n" + inner_->describe(); }

 private:
  std::unique_ptr<Program> inner_;
  std::vector<Tensor> kept_;
};

template <class P>
class WrappingBackend : public Backend {
 public:
  explicit WrappingBackend(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  bool supports(const FunctionGraph&, std::string*) const override { return true; }
  std::unique_ptr<Program> compile(const FunctionGraph& fg) override {
    return std::make_unique<P>(get_backend("reference")->compile(fg));
  }

 private:
  std::string name_;
};

void register_test_backends() {
  register_backend("fuzz-nudged", [] {
    return std::shared_ptr<Backend>(
        std::make_shared<WrappingBackend<NudgedProgram>>("fuzz-nudged"));
  });
  register_backend("fuzz-reusing", [] {
    return std::shared_ptr<Backend>(
        std::make_shared<WrappingBackend<ReusingProgram>>("fuzz-reusing"));
  });
}

}  // namespace

TEST_CASE("fuzz: the generator is deterministic and builds only valid graphs") {
  for (std::uint64_t seed : {1ull, 2ull, 77ull, 12345ull}) {
    const FuzzCase a = fuzz::make_case(seed);
    const FuzzCase b = fuzz::make_case(seed);
    CAPTURE(seed);
    // Node ids differ between the two builds; the printed graphs and the values must not.
    CHECK(a.describe() == b.describe());
    REQUIRE(a.call_inputs.size() == b.call_inputs.size());
    for (std::size_t c = 0; c < a.call_inputs.size(); ++c)
      for (std::size_t i = 0; i < a.call_inputs[c].size(); ++i)
        CHECK(fuzz::detail::same_bits(a.call_inputs[c][i], b.call_inputs[c][i]));
    CHECK(a.skipped.empty());
    CHECK(!a.outputs.empty());
    CHECK(a.calls >= 2);
  }
  // Different seeds give different graphs.
  CHECK(fuzz::make_case(1).describe() != fuzz::make_case(2).describe());
}

TEST_CASE("fuzz: the harness reports a wrong backend with its seed and first difference") {
  register_test_backends();
  // The first seed whose case has a non-empty float output.
  std::uint64_t seed = 1;
  for (; seed < 100; ++seed) {
    const FuzzCase c = fuzz::make_case(seed);
    bool has_float = false;
    for (std::size_t i = 0; i < c.outputs.size(); ++i)
      has_float =
          has_float || (is_float(c.outputs[i].dtype()) && shape_numel(c.output_shapes[i]) > 0);
    if (has_float) break;
  }
  const Outcome nudged = fuzz::compare_backends(seed, opts("fuzz-nudged"), opts("reference"));
  CHECK_FALSE(nudged.ok);
  CHECK(nudged.message.find("seed " + std::to_string(seed)) != std::string::npos);
  CHECK(nudged.message.find("THEA_FUZZ_SEED=" + std::to_string(seed) + " THEA_FUZZ_COUNT=1") !=
        std::string::npos);
  CHECK(nudged.message.find("element [") != std::string::npos);
  CHECK(nudged.message.find("outputs:") != std::string::npos);  // the graph is printed

  const Outcome same = fuzz::compare_backends(seed, opts("reference"), opts("reference"));
  CHECK_MESSAGE(same.ok, same.message);

  // A program that hands out the same buffers on every call is caught too.
  int caught = 0;
  for (std::uint64_t s = 1; s < 30; ++s) {
    const Outcome reuse = fuzz::compare_backends(s, opts("fuzz-reusing"), opts("reference"));
    if (!reuse.ok && reuse.message.find("overwritten by a later call") != std::string::npos)
      ++caught;
  }
  CHECK(caught > 0);
}

TEST_CASE("fuzz: op rewrites on the reference backend (excluded vs included)") {
  const std::uint64_t count = seed_count();
  const LoopStats st = run_seeds(first_seed(), count, [](const FuzzCase& c) {
    return fuzz::compare_case(c, opts("reference"), opts("reference", fuzz::rewrite_tags()));
  });
  report("reference with rewrites vs without", st);
  // The generator must keep reaching the patterns the rewrites exist for.
  if (count >= 200 && !st.cut_by_budget) {
    std::string seen;
    for (const auto& [op, n] : st.ops) seen += " " + op + ":" + std::to_string(n);
    for (const auto& [f, n] : st.features) seen += " [" + f + "]:" + std::to_string(n);
    MESSAGE("graphs containing each op after rewrites, [generator features]:" << seen);
    for (const char* op : {"crossentropy_softmax",
                           "crossentropy_softmax_1hot_dx",
                           "log_softmax",
                           "softmax",
                           "softmax_grad",
                           "argmax",
                           "argmin",
                           "take",
                           "subtensor",
                           "inc_subtensor",
                           "set_subtensor",
                           "inc_rows",
                           "concatenate",
                           "reshape",
                           "dimshuffle",
                           "one_hot",
                           "dot",
                           "sum",
                           "prod",
                           "max",
                           "min",
                           "mean",
                           "switch",
                           "clip",
                           "softplus"}) {
      CAPTURE(op);
      CHECK(st.ops.count(op) > 0);
    }
    bool inplace = false, trans = false;
    for (const auto& [op, n] : st.ops) {
      inplace = inplace || op.find("inplace") != std::string::npos;
      trans = trans || (op.rfind("gemm", 0) == 0 && op.find("trans_a") != std::string::npos);
    }
    CHECK_MESSAGE(inplace, "no graph had an in-place gemm update");
    CHECK_MESSAGE(trans, "no graph had a gemm with a transposed operand");
  }
}

TEST_CASE("fuzz: expand_row_ops on the reference backend") {
  // What a backend whose fuser prefers primitives runs (softmax & co. as Elemwise + Reduce).
  const LoopStats st = run_seeds(first_seed(), seed_count(), [](const FuzzCase& c) {
    return fuzz::compare_runs(c, fuzz::run_expanded(c, "reference"),
                              fuzz::run_case(c, opts("reference", fuzz::rewrite_tags())));
  });
  report("reference after expand_row_ops vs without rewrites", st);
}

// The backend loop: cases merged THEA_FUZZ_BATCH at a time (default 8) into one function,
// since a compiled backend's cost is mostly fixed per compile; a failing batch is re-run
// case by case to name the failing seeds.
LoopStats run_backend_seeds(const std::string& name, std::uint64_t first, std::uint64_t count) {
  const std::size_t batch = std::max<std::uint64_t>(1, fuzz::env_u64("THEA_FUZZ_BATCH", 8));
  // Every fourth graph runs both sides with the op rewrites off, so the backend also
  // sees unfused ops (softmax, crossentropy_categorical_1hot, dot).
  auto pair_for = [&](std::uint64_t seed) {
    if (seed % 4 == 3)
      return std::pair{opts(name, fuzz::rewrite_tags()), opts("reference", fuzz::rewrite_tags())};
    return std::pair{opts(name), opts("reference")};
  };
  LoopStats st;
  const auto t0 = std::chrono::steady_clock::now();
  // Pending batches keyed by (rewrites on/off, calls): a batch shares both.
  std::map<std::pair<bool, int>, std::vector<FuzzCase>> pending;
  auto flush = [&](std::vector<FuzzCase>& cases) {
    if (cases.empty()) return;
    const auto [a, b] = pair_for(cases[0].seed);
    const FuzzCase merged = fuzz::merge_cases(cases);
    const Outcome o = fuzz::compare_case(merged, a, b);
    st.ran += cases.size();
    count_ops(o.a.ops, st.ops);
    // Identical results run to run (fixed inputs, same process): bit for bit.
    if (o.ok && (++st.batches % 4) == 1) {
      const Outcome again =
          fuzz::compare_runs(merged, fuzz::run_case(merged, a), o.a, fuzz::Tolerance{0, 0, 0, 0});
      if (!again.ok) {
        for (const FuzzCase& c : cases) st.failed.push_back(c.seed);
        FAIL_CHECK("two runs of the same function differ (seeds " << seeds_str([&] {
                     std::vector<std::uint64_t> v;
                     for (const FuzzCase& c : cases) v.push_back(c.seed);
                     return v;
                   }()) << "):\n" << again.message);
      }
    }
    if (!o.ok) {
      std::vector<std::uint64_t> seeds;
      for (const FuzzCase& c : cases) {
        seeds.push_back(c.seed);
        const Outcome single = fuzz::compare_case(c, a, b);
        if (single.ok) continue;
        st.failed.push_back(c.seed);
        if (brief() || shrink() || st.failed.size() <= 3) FAIL_CHECK(failure_text(c, single, a, b));
      }
      if (std::all_of(cases.begin(), cases.end(), [&](const FuzzCase& c) {
            return std::find(st.failed.begin(), st.failed.end(), c.seed) == st.failed.end();
          })) {
        // Only the merged function fails: report the batch as a whole.
        st.failed.push_back(cases[0].seed);
        FAIL_CHECK("seeds " << seeds_str(seeds) << " pass one by one but fail merged into one "
                            << "function (reproduce: THEA_FUZZ_SEED=" << cases[0].seed
                            << " THEA_FUZZ_COUNT=" << cases.size()
                            << " THEA_FUZZ_BATCH=" << cases.size() << "):\n"
                            << o.message);
      }
    }
    cases.clear();
  };
  for (std::uint64_t k = 0; k < count; ++k) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed > budget_seconds()) {
      st.cut_by_budget = true;
      break;
    }
    FuzzCase c = fuzz::make_case(first + k);
    for (const std::string& f : c.features) st.features[f]++;
    std::vector<FuzzCase>& bucket = pending[{c.seed % 4 == 3, c.calls}];
    bucket.push_back(std::move(c));
    if (bucket.size() >= batch) flush(bucket);
  }
  for (auto& [key, cases] : pending) flush(cases);
  return st;
}

TEST_CASE("fuzz: every available backend against the reference") {
  std::vector<std::string> skipped;
  const std::vector<std::string> tested = available_backends(&skipped);
  std::string s;
  for (const std::string& x : skipped) s += "\n  " + x;
  if (!skipped.empty()) MESSAGE("backends skipped (unavailable here):" << s);
  if (tested.empty()) MESSAGE("no non-reference backend is available: only the rewrite checks ran");
  for (const std::string& name : tested) {
    SUBCASE(name.c_str()) {
      const LoopStats st = run_backend_seeds(name, first_seed(), seed_count());
      report(name + " vs reference", st);
    }
  }
}

TEST_CASE("fuzz: regression seeds") {
  std::vector<std::string> backends = available_backends();
  int stale = 0;
  for (const fuzz::Regression& r : fuzz::kRegressions) {
    if (r.generator_version != fuzz::kGeneratorVersion) {
      ++stale;
      continue;
    }
    CAPTURE(r.seed);
    CAPTURE(r.note);
    fuzz::GenOptions gen;
    gen.max_ops = r.max_ops;
    const FuzzCase c = fuzz::make_case(r.seed, gen);
    const FunctionOptions plain = opts("reference", fuzz::rewrite_tags());
    Outcome o = fuzz::compare_case(c, opts("reference"), plain);
    CHECK_MESSAGE(o.ok, o.message);
    o = fuzz::compare_runs(c, fuzz::run_expanded(c, "reference"), fuzz::run_case(c, plain));
    CHECK_MESSAGE(o.ok, o.message);
    for (const std::string& b : backends) {
      o = fuzz::compare_case(c, opts(b), opts("reference"));
      CHECK_MESSAGE(o.ok, o.message);
      o = fuzz::compare_case(c, opts(b, fuzz::rewrite_tags()), plain);
      CHECK_MESSAGE(o.ok, o.message);
    }
  }
  if (stale > 0)
    MESSAGE(stale << " regression seeds belong to an older generator version and were not run");
  // The hand-written reproductions of past failures do not depend on the generator.
  backends.insert(backends.begin(), "reference");
  for (const fuzz::RegressionCase& r : fuzz::regression_cases()) {
    CAPTURE(r.note);
    for (const std::string& b : backends) {
      const FuzzCase c = r.build();
      const Outcome o = fuzz::compare_case(c, opts(b), opts("reference", fuzz::rewrite_tags()));
      CHECK_MESSAGE(o.ok, o.message);
    }
  }
}
