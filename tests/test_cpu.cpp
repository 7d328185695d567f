// The cpu backend end to end: the MNIST softmax model's train and predict functions against
// the reference backend, kernel counts, in-place updates, steady-state allocations, layouts.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thea/ops/fused.hpp>
#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>

#include "../backends/cpu/program.hpp"

using namespace thea;

// Counts heap allocations so a test can assert that a steady-state call allocates nothing
// beyond the returned outputs. Every unaligned form is replaced, not just new(size_t): the
// defaults of the others forward to it, but AddressSanitizer replaces them with its own (e.g.
// std::stable_sort's nothrow new), whose blocks our delete would then free() (a mismatch).
namespace {
std::atomic<long> g_allocs{0};
void* counted_malloc(std::size_t n) noexcept {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
// Out of line so GCC does not see free() inlined against a new-expression and warn
// (-Wmismatched-new-delete): it cannot know that our operator new is malloc.
[[gnu::noinline]] void release(void* p) noexcept { std::free(p); }
}  // namespace
void* operator new(std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }

namespace thea {
std::shared_ptr<Backend> make_cpu_backend();
}

namespace {

void ensure_cpu() {
  static bool once = [] {
    register_backend("cpu", &make_cpu_backend);
    return true;
  }();
  (void)once;
}

FunctionOptions on(const char* backend) {
  FunctionOptions o;
  o.backend = backend;
  return o;
}

Tensor one_hot_rows(int n, int classes, int seed) {
  Tensor y = Tensor::zeros({n, classes});
  for (int i = 0; i < n; ++i) y.set({i, (i * 7 + seed) % classes}, 1.0);
  return y;
}

struct Model {
  Variable X = fmatrix("X");
  Variable Y = fmatrix("Y");
  Variable w;
  Function train, predict;
  Model(const char* backend, std::uint64_t seed = 42)
      : w(shared(random_normal({784, 10}, 0.0, 0.01, seed), "w")),
        train(make_train(backend)),
        predict(make_predict(backend)) {}
  Function make_train(const char* backend) {
    auto py_x = nnet::softmax(dot(X, w));
    auto cost = mean(nnet::categorical_crossentropy(py_x, Y));
    auto g = grad(cost, w);
    return function({X, Y}, {cost}, {{w, w - g * 0.05}}, on(backend));
  }
  Function make_predict(const char* backend) {
    auto py_x = nnet::softmax(dot(X, w));
    return function({X}, {argmax(py_x, 1)}, {}, on(backend));
  }
};

std::unique_ptr<Program> compile_cpu(const std::vector<Variable>& ins,
                                     const std::vector<Variable>& outs, const Updates& ups = {}) {
  ensure_cpu();
  std::vector<NodePtr> in_nodes, out_nodes;
  for (const Variable& v : ins) in_nodes.push_back(v.node());
  for (const Variable& v : outs) out_nodes.push_back(v.node());
  std::vector<UpdatePair> up;
  for (const auto& [t, v] : ups) up.push_back({t.node(), v.node()});
  static std::vector<std::unique_ptr<FunctionGraph>> keep;  // programs reference the graph
  keep.push_back(std::make_unique<FunctionGraph>(in_nodes, out_nodes, up));
  run_rewrites(*keep.back());
  return get_backend("cpu")->compile(*keep.back());
}

}  // namespace

TEST_CASE("mnist softmax: cpu matches the reference backend step by step") {
  ensure_cpu();
  Model cpu_m("cpu"), ref_m("reference");
  Tensor x = random_uniform({128, 784}, 0.0, 1.0, 7);
  Tensor y = one_hot_rows(128, 10, 3);
  for (int step = 0; step < 5; ++step) {
    Tensor xs = random_uniform({128, 784}, 0.0, 1.0, 100 + step);
    float c1 = cpu_m.train({xs, y})[0].item<float>();
    float c2 = ref_m.train({xs, y})[0].item<float>();
    CHECK(c1 == doctest::Approx(c2).epsilon(1e-5));
    CHECK(max_abs_diff(cpu_m.w.get_value(), ref_m.w.get_value()) < 1e-6);
  }
  Tensor p1 = cpu_m.predict({x})[0];
  Tensor p2 = ref_m.predict({x})[0];
  CHECK(p1.dtype() == Dtype::Int64);
  CHECK(p1.shape() == Shape{128});
  CHECK(max_abs_diff(p1, p2) == 0);
}

TEST_CASE("mnist softmax: the train step is one launch with the update written in place") {
  ensure_cpu();
  Model m("cpu");
  CHECK(m.train.backend_name() == "cpu");
  // The schedule's three kernels (forward product, fused row loop, in-place gradient
  // product) run as one row chain: a single launch per step.
  CHECK(m.train.kernel_count() == 1);
  CHECK(m.predict.kernel_count() == 1);
  const std::string d = m.train.debugprint();
  CHECK(d.find("k0_gemm [row chain: gemm, then loop on its rows]: dot") != std::string::npos);
  CHECK(d.find("k1_loop [in the row chain above]: crossentropy_softmax") != std::string::npos);
  CHECK(d.find("k2_gemm [in the row chain above]: gemm{trans_a, accumulate, inplace}") !=
        std::string::npos);
  CHECK(d.find("update w written in place") != std::string::npos);
}

TEST_CASE("a train chain keeps its weights transposed; every other reader sees the value") {
  ensure_cpu();
  // float32 and float64 (4- and 8-byte transposes); w's readers between steps: get_value, a
  // predict function, set_value, a second train function on the same w, the reference
  // backend, and functions that read w elsewhere (those keep it row-major).
  for (Dtype dt : {Dtype::Float32, Dtype::Float64}) {
    CAPTURE(dtype_name(dt));
    Tensor w0 = random_normal({50, 10}, 0.0, 0.1, 3).astype(dt);
    Variable X = tensor(dt, 2, "X"), Y = tensor(dt, 2, "Y");
    Variable wc = shared(w0.clone(), "w"), wr = shared(w0.clone(), "w");
    auto train_fn = [&](Variable& w, const char* backend, double lr) {
      auto cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
      return function({X, Y}, {cost}, {{w, w - grad(cost, w) * lr}}, on(backend));
    };
    auto predict_fn = [&](Variable& w, const char* backend) {
      return function({X}, {argmax(dot(X, w), 1), sum(w)}, {}, on(backend));
    };
    Function tc = train_fn(wc, "cpu", 0.5), tr = train_fn(wr, "reference", 0.5);
    Function tc2 = train_fn(wc, "cpu", 0.25), tr2 = train_fn(wr, "reference", 0.25);
    Function pc = predict_fn(wc, "cpu"), pr = predict_fn(wr, "reference");
    CHECK(tc.debugprint().find("update w written in place, kept transposed between calls") !=
          std::string::npos);
    CHECK(pc.debugprint().find("kept transposed") == std::string::npos);
    // Weight decay reads w in the cost's loop too: w stays row-major there.
    auto decay_cost = [&](Variable& w) {
      return mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y)) + sum(w * w) * 0.001;
    };
    Function dc =
        function({X, Y}, {decay_cost(wc)}, {{wc, wc - grad(decay_cost(wc), wc) * 0.5}}, on("cpu"));
    Function dr = function({X, Y}, {decay_cost(wr)}, {{wr, wr - grad(decay_cost(wr), wr) * 0.5}},
                           on("reference"));
    CHECK(dc.debugprint().find("kept transposed") == std::string::npos);
    const double tol = dt == Dtype::Float32 ? 1e-5 : 1e-12;
    auto same_w = [&] { return max_abs_diff(wc.get_value(), wr.get_value()) < tol; };
    for (int step = 0; step < 8; ++step) {
      CAPTURE(step);
      Tensor x = random_uniform({130, 50}, 0, 1, 10 + step).astype(dt);
      Tensor y = one_hot_rows(130, 10, step).astype(dt);
      auto [fc, fr] = step % 4 == 1   ? std::pair{&tc2, &tr2}
                      : step % 4 == 3 ? std::pair{&dc, &dr}
                                      : std::pair{&tc, &tr};
      CHECK((*fc)({x, y})[0].item<double>() ==
            doctest::Approx((*fr)({x, y})[0].item<double>()).epsilon(1e-5));
      if (step % 2 == 0) CHECK(same_w());  // get_value rebuilds the row-major value
      if (step == 2 || step == 5) {
        auto a = pc({x}), b = pr({x});
        CHECK(max_abs_diff(a[0], b[0]) == 0);
        CHECK(a[1].item<double>() == doctest::Approx(b[1].item<double>()).epsilon(1e-5));
      }
      if (step == 4) {
        Tensor fresh = random_normal({50, 10}, 0.0, 0.1, 99).astype(dt);
        wc.set_value(fresh);
        wr.set_value(fresh);
      }
    }
    CHECK(same_w());
  }
}

TEST_CASE("batch size changes re-plan the layout; a partial last batch is right") {
  ensure_cpu();
  Model cpu_m("cpu"), ref_m("reference");
  for (int rows : {128, 37, 1, 128, 200}) {
    Tensor xs = random_uniform({rows, 784}, 0.0, 1.0, rows);
    Tensor ys = one_hot_rows(rows, 10, rows);
    float c1 = cpu_m.train({xs, ys})[0].item<float>();
    float c2 = ref_m.train({xs, ys})[0].item<float>();
    CHECK(c1 == doctest::Approx(c2).epsilon(1e-5));
    CHECK(max_abs_diff(cpu_m.predict({xs})[0], ref_m.predict({xs})[0]) == 0);
  }
  CHECK(max_abs_diff(cpu_m.w.get_value(), ref_m.w.get_value()) < 1e-6);
}

TEST_CASE("a kernel over an empty array still stores its loop-invariant values") {
  // lr * 3 joins x * lr's kernel, computed once per launch: written even with no points.
  ensure_cpu();
  auto x = fmatrix("x");
  auto lr = shared(Tensor::scalar(0.5), "lr");
  std::vector<Variable> outs = {x * lr, lr * 3.0f, sqr(lr) + 1.0f};
  auto f = function({x}, outs, {}, on("cpu"));
  auto g = function({x}, outs, {}, on("reference"));
  for (std::int64_t rows : {0, 4}) {
    CAPTURE(rows);
    Tensor xv = random_uniform({rows, 5}, -1, 1, 3);
    auto got = f({xv}), want = g({xv});
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(allclose(got[i], want[i], 1e-6, 1e-6));
  }
}

TEST_CASE("strided inputs (column slices) are read correctly") {
  ensure_cpu();
  auto a = fmatrix("a");
  auto b = fmatrix("b");
  auto f = function({a, b}, {sum(exp(a) * b, 1)}, {}, on("cpu"));
  auto g = function({a, b}, {sum(exp(a) * b, 1)}, {}, on("reference"));
  Tensor big = random_uniform({6, 10}, -1, 1, 3);
  Tensor cols = big.slice(1, 2, 7);  // 6 x 5, strided
  Tensor other = random_uniform({6, 5}, -1, 1, 4);
  REQUIRE_FALSE(cols.is_contiguous());
  CHECK(allclose(f({cols, other})[0], g({cols, other})[0], 1e-5, 1e-6));
  Tensor t = random_uniform({5, 6}, -1, 1, 5).permute({1, 0});
  CHECK(allclose(f({t, other})[0], g({t, other})[0], 1e-5, 1e-6));
}

TEST_CASE("outputs never alias shared state; updates use the old values") {
  ensure_cpu();
  auto x = fvector("x");
  auto a = shared(Tensor::from_list({1, 2, 3}), "a");
  auto b = shared(Tensor::from_list({10, 20, 30}), "b");
  // Returns a's old value while swapping a and b and adding x to b.
  auto f = function({x}, {a, a * 2.0}, {{a, b}, {b, a + x}}, on("cpu"));
  auto out = f({Tensor::from_list({1, 1, 1})});
  CHECK(out[0].to_vector() == std::vector<double>{1, 2, 3});
  CHECK(out[1].to_vector() == std::vector<double>{2, 4, 6});
  CHECK(a.get_value().to_vector() == std::vector<double>{10, 20, 30});
  CHECK(b.get_value().to_vector() == std::vector<double>{2, 3, 4});
  out[0].set({0}, 99);  // the caller owns the output
  CHECK(a.get_value().to_vector() == std::vector<double>{10, 20, 30});
}

TEST_CASE("an update whose old value is still needed is not written in place") {
  ensure_cpu();
  auto x = fvector("x");
  auto w = shared(Tensor::from_list({1, 2, 3}), "w");
  // w's new value and an output that reads the old w after it: copied at the end.
  auto f = function({x}, {w * x}, {{w, w + x}}, on("cpu"));
  auto r = f({Tensor::from_list({1, 2, 3})});
  CHECK(r[0].to_vector() == std::vector<double>{1, 4, 9});
  CHECK(w.get_value().to_vector() == std::vector<double>{2, 4, 6});
  // An elementwise update alone is done in place by its loop.
  auto g = function({x}, {}, {{w, w - x * 0.5}}, on("cpu"));
  g({Tensor::from_list({2, 2, 2})});
  CHECK(w.get_value().to_vector() == std::vector<double>{1, 3, 5});
  CHECK(g.debugprint().find("update w written in place") != std::string::npos);
}

TEST_CASE("steady-state calls allocate only the returned outputs") {
  Model m("cpu");
  auto prog = compile_cpu(
      {m.X, m.Y}, {},
      {{m.w,
        m.w - grad(mean(nnet::categorical_crossentropy(nnet::softmax(dot(m.X, m.w)), m.Y)), m.w) *
                  0.05}});
  std::vector<Tensor> args{random_uniform({128, 784}, 0, 1, 1), one_hot_rows(128, 10, 1)};
  prog->run(args);
  prog->run(args);
  long before = g_allocs.load();
  for (int i = 0; i < 10; ++i) prog->run(args);
  long per_call = (g_allocs.load() - before) / 10;
  MESSAGE("heap allocations per train call (no outputs): " << per_call);
  CHECK(per_call <= 1);  // the (empty) result vector
}

TEST_CASE("run-time shape errors name the variables") {
  ensure_cpu();
  auto a = fmatrix("a");
  auto b = fmatrix("b");
  auto f = function({a, b}, {a + b}, {}, on("cpu"));
  CHECK_THROWS_WITH_AS(f({Tensor::zeros({2, 3}), Tensor::zeros({2, 4})}), doctest::Contains("b"),
                       ShapeError);
  // Size 1 at run time does not broadcast when the type does not say so.
  CHECK_THROWS_AS(f({Tensor::zeros({2, 3}), Tensor::zeros({1, 3})}), ShapeError);
  auto v = fvector("v");
  auto mx = function({v}, {max(v)}, {}, on("cpu"));
  CHECK_THROWS_AS(mx({Tensor::zeros({0})}), ValueError);
}

TEST_CASE("results are identical run to run") {
  ensure_cpu();
  Model m1("cpu", 5), m2("cpu", 5);
  for (int step = 0; step < 3; ++step) {
    Tensor xs = random_uniform({128, 784}, 0, 1, step);
    Tensor ys = one_hot_rows(128, 10, step);
    CHECK(m1.train({xs, ys})[0].item<float>() == m2.train({xs, ys})[0].item<float>());
  }
  CHECK(max_abs_diff(m1.w.get_value(), m2.w.get_value()) == 0);
}

TEST_CASE("big reductions split across parts stay accurate and deterministic") {
  ensure_cpu();
  auto v = fvector("v");
  auto f = function({v}, {sum(v), mean(v * v), max(v), min(v)}, {}, on("cpu"));
  auto g = function({v}, {sum(v), mean(v * v), max(v), min(v)}, {}, on("reference"));
  Tensor x = random_uniform({1 << 20}, -1, 1, 11);
  auto a = f({x});
  auto b = g({x});
  for (int i = 0; i < 4; ++i)
    CHECK(a[i].item<double>() == doctest::Approx(b[i].item<double>()).epsilon(1e-6));
  auto a2 = f({x});
  for (int i = 0; i < 4; ++i) CHECK(a[i].item<double>() == a2[i].item<double>());
}

TEST_CASE("dot of vectors and matrices in every combination, float and int") {
  ensure_cpu();
  struct Case {
    Shape a, b;
  };
  for (Dtype dt : {Dtype::Float32, Dtype::Float64, Dtype::Int64}) {
    for (const Case& c : {Case{{5, 7}, {7, 3}}, Case{{5, 7}, {7}}, Case{{7}, {7, 3}},
                          Case{{7}, {7}}, Case{{40, 33}, {33, 20}}, Case{{64, 300}, {300, 12}}}) {
      auto a = tensor(dt, static_cast<int>(c.a.size()), "a");
      auto b = tensor(dt, Shape(c.b.begin(), c.b.end()), "b");
      auto f = function({a, b}, {dot(a, b)}, {}, on("cpu"));
      auto g = function({a, b}, {dot(a, b)}, {}, on("reference"));
      Tensor x = random_uniform(c.a, -2, 2, 1).astype(dt);
      Tensor y = random_uniform(c.b, -2, 2, 2).astype(dt);
      CHECK_MESSAGE(allclose(f({x, y})[0], g({x, y})[0], 1e-5, 1e-5),
                    dtype_name(dt) << " " << shape_str(c.a) << " . " << shape_str(c.b));
    }
  }
}

TEST_CASE("without a compiler, functions fall back to the reference backend") {
  if (const char* child = std::getenv("THEA_TEST_NO_COMPILER_CHILD"); child && *child) {
    // In the child: THEA_CXX points nowhere, so the cpu backend is unavailable.
    CHECK(default_backend_name() == "reference");
    auto x = fvector("x");
    auto f = function({x}, {exp(x)});
    CHECK(f.backend_name() == "reference");
    CHECK(f({Tensor::from_list({0.0})})[0].item<float>() == 1.0f);
    CHECK_THROWS_WITH_AS(get_backend("cpu"), doctest::Contains("thea-no-such-compiler"),
                         BackendError);
    return;
  }
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setenv("THEA_TEST_NO_COMPILER_CHILD", "1", 1);
    ::setenv("THEA_CXX", "/nonexistent/thea-no-such-compiler", 1);
    ::unsetenv("THEA_BACKEND");
    ::execl("/proc/self/exe", "test_cpu", "-tc=without a compiler*", "-nv",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("minibatch slices of a shared dataset are read in place, and copied when written") {
  ensure_cpu();
  Tensor data = random_uniform({6, 4}, -1, 1, 21);
  Tensor w0 = random_uniform({4, 3}, -1, 1, 22);
  auto run = [&](const std::string& backend, bool update_data) {
    auto trX = shared(data.clone(), "trX");
    auto w = shared(w0.clone(), "w");
    auto i = lscalar("i");
    auto X = fmatrix("X");
    Givens givens = {{X, subtensor(trX, {Slice(i * 2, (i + 1) * 2)})}};
    Updates ups = {{w, w - dot(X.T(), nnet::softmax(dot(X, w))) * 0.1}};
    // Writing the dataset in the same call: kernels must still see its old rows.
    if (update_data) ups.push_back({trX, trX * 2.0});
    FunctionOptions o = on(backend.c_str());
    Function f = function({i}, {argmax(dot(X, w), 1), sum(X)}, ups, givens, o);
    std::vector<Tensor> out;
    for (std::int64_t step : {0, 1, 2, 1}) {
      auto r = f({Tensor::scalar(step, Dtype::Int64)});
      out.insert(out.end(), r.begin(), r.end());
    }
    out.push_back(w.get_value());
    out.push_back(trX.get_value());
    return out;
  };
  for (bool update_data : {false, true}) {
    CAPTURE(update_data);
    auto a = run("cpu", update_data);
    auto b = run("reference", update_data);
    REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k) CHECK(max_abs_diff(a[k], b[k]) < 1e-6);
  }
}

TEST_CASE("run-time slice bounds: the layout is kept while the slice's shape is, else redone") {
  ensure_cpu();
  // Same length at other offsets (layout reused, other rows read), other lengths (re-planned,
  // including an empty slice and the whole array), bounds past the end (clipped, as numpy),
  // then the first length again.
  Tensor data = random_uniform({10, 3}, -1, 1, 31);
  auto run = [&](const std::string& backend) {
    auto d = shared(data.clone(), "d");
    auto a = lscalar("a"), b = lscalar("b");
    auto x = subtensor(d, {Slice(a, b)});
    Function f = function({a, b}, {sum(x * 2.0, 0), x + 1.0}, {}, on(backend.c_str()));
    std::vector<Tensor> out;
    for (auto [lo, hi] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {0, 4}, {2, 6}, {6, 10}, {1, 2}, {3, 3}, {0, 10}, {8, 14}, {5, 9}, {0, 4}}) {
      auto r = f({Tensor::scalar(lo, Dtype::Int64), Tensor::scalar(hi, Dtype::Int64)});
      out.insert(out.end(), r.begin(), r.end());
    }
    return out;
  };
  auto c = run("cpu"), r = run("reference");
  REQUIRE(c.size() == r.size());
  for (std::size_t k = 0; k < c.size(); ++k) {
    CAPTURE(k);
    CHECK(c[k].shape() == r[k].shape());
    CHECK(max_abs_diff(c[k], r[k]) < 1e-6);
  }
}

TEST_CASE("rendering: short rows are computed a block of rows at a time, long ones row by row") {
  auto source_of = [](const std::vector<Variable>& ins, const std::vector<Variable>& outs) {
    std::vector<NodePtr> in, out;
    for (const Variable& v : ins) in.push_back(v.node());
    for (const Variable& v : outs) out.push_back(v.node());
    FunctionGraph fg(in, out, {});
    run_rewrites(fg);
    sched::Schedule s = sched::make_schedule(fg);
    return cpu::render(s, sched::make_memplan(s), 64).source;
  };
  auto z = tensor(Dtype::Float32, Shape{kUnknownDim, 10}, "z");
  CHECK(source_of({z}, {nnet::softmax(z)}).find("rows of the block vectorised") !=
        std::string::npos);
  // Row argmax keeps its first-index/NaN logic row by row; long rows stay row by row too.
  CHECK(source_of({z}, {argmax(z, 1)}).find("rows of the block vectorised") == std::string::npos);
  auto wide = tensor(Dtype::Float32, Shape{kUnknownDim, 784}, "wide");
  CHECK(source_of({wide}, {nnet::softmax(wide)}).find("rows of the block vectorised") ==
        std::string::npos);
}

TEST_CASE("row chains: every shape, batch split and fallback matches the reference") {
  ensure_cpu();
  // Batches below, at and around the 64-row parts; N up to 16 chains the gradient product,
  // 17 leaves it to OpenBLAS (the chain then ends at the row loop); K not a multiple of the
  // vector lanes; a bias and a hidden nonlinearity in the row loop.
  for (int n_out : {1, 2, 10, 16, 17}) {
    for (int n_in : {1, 17, 100}) {
      CAPTURE(n_out);
      CAPTURE(n_in);
      Tensor w0 = random_normal({n_in, n_out}, 0.0, 0.1, n_in * 31 + n_out);
      Tensor b0 = random_normal({n_out}, 0.0, 0.1, n_out);
      auto build = [&](const char* backend, Variable& w, Variable& b) {
        Variable X = fmatrix("X"), Y = fmatrix("Y");
        w = shared(w0.clone(), "w");
        b = shared(b0.clone(), "b");
        auto z = dot(X, w) + b;
        auto cost = mean(nnet::categorical_crossentropy(nnet::softmax(tanh(z) * 3.0), Y));
        auto gw = grad(cost, w), gb = grad(cost, b);
        return function({X, Y}, {cost, argmax(z, 1)}, {{w, w - gw * 0.1}, {b, b - gb * 0.1}},
                        on(backend));
      };
      Variable wc, bc, wr, br;
      Function fc = build("cpu", wc, bc), fr = build("reference", wr, br);
      for (int rows : {1, 63, 64, 65, 128, 129, 300}) {
        CAPTURE(rows);
        Tensor x = random_uniform({rows, n_in}, -1, 1, rows + n_in);
        Tensor y = one_hot_rows(rows, n_out, rows);
        auto a = fc({x, y});
        auto r = fr({x, y});
        CHECK(a[0].item<double>() == doctest::Approx(r[0].item<double>()).epsilon(1e-5));
        CHECK(max_abs_diff(a[1], r[1]) == 0);
        CHECK(max_abs_diff(wc.get_value(), wr.get_value()) < 1e-5);
        CHECK(max_abs_diff(bc.get_value(), br.get_value()) < 1e-5);
      }
    }
  }
}
