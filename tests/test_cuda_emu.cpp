// The CUDA backend end to end on the SIMT emulator ("cuda_emu"): the same lowering,
// generated kernels, parameter blocks, buffers, in-place updates and graph replay as on a
// GPU, checked against the reference backend. Runs without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz/graph_gen.hpp"
#include "test_cuda_cases.hpp"
#include "thea/thea.hpp"

#if THEA_HAVE_CUDA
#include "cuda/cuda_backend.hpp"
#include "cuda/program.hpp"
#include "cuda/runtime.hpp"

using namespace thea;

namespace {

void register_emu() {
  static bool done = [] {
    register_backend("cuda_emu", &make_cuda_emu_backend);
    return true;
  }();
  (void)done;
}

FunctionOptions on(const std::string& backend) {
  FunctionOptions o;
  o.backend = backend;
  return o;
}

// Compiles the same graph on the reference backend and on cuda_emu and compares outputs.
void check_same(const std::vector<Variable>& inputs, const std::vector<Variable>& outputs,
                const std::vector<Tensor>& args, double rtol = 1e-5, double atol = 1e-6,
                std::size_t max_kernels = 1000) {
  register_emu();
  Function ref = function(inputs, outputs, {}, on("reference"));
  Function emu = function(inputs, outputs, {}, on("cuda_emu"));
  CHECK(emu.kernel_count() <= max_kernels);
  INFO(emu.debugprint());
  auto want = ref(args);
  for (int call = 0; call < 3; ++call) {  // eager, capture, replay
    auto got = emu(args);
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      CAPTURE(i);
      CAPTURE(call);
      CHECK(got[i].dtype() == want[i].dtype());
      REQUIRE(got[i].shape() == want[i].shape());
      if (!allclose(got[i], want[i], rtol, atol)) {
        INFO("got  " << got[i].to_string());
        INFO("want " << want[i].to_string());
        INFO(emu.debugprint());
        CHECK(false);
      }
    }
  }
}

// A small stand-in for MNIST: n examples of `features` normal values (seed) and one-hot
// targets, example i of class (i * label_step) % classes.
std::pair<Tensor, Tensor> toy_dataset(int n, int features, int classes, int label_step,
                                      std::uint64_t seed) {
  Tensor xs = Tensor::random_normal({n, features}, 0, 1, seed);
  Tensor ys = Tensor::zeros({n, classes});
  for (int i = 0; i < n; ++i) ys.set({i, (i * label_step) % classes}, 1.0);
  return {xs, ys};
}

}  // namespace

TEST_CASE("cuda_emu: runtime smoke (the checks gpu-check runs first on a GPU)") {
  cuda_tests::runtime_smoke(cuda::emu_runtime());
}

TEST_CASE("cuda_emu: fused elementwise chain with broadcasting") {
  Variable x = fmatrix("x");
  Variable b = tensor(Dtype::Float32, Shape{1, -1}, "b");
  Variable y = exp(x * 2.0f) + b - sqrt(abs(x));
  Tensor xv = Tensor::random_normal({5, 7}, 0, 1, 1);
  Tensor bv = Tensor::random_normal({1, 7}, 0, 1, 2);
  check_same({x, b}, {y}, {xv, bv});
}

TEST_CASE("cuda_emu: a kernel over an empty array still stores its loop-invariant values") {
  // lr * 3 (lr a shared scalar, on the device) joins x * lr's kernel as a value computed
  // once per launch: stored even when the kernel has no points.
  Variable x = fmatrix("x");
  Variable lr = shared(Tensor::scalar(0.5), "lr");
  for (std::int64_t rows : {0, 4}) {
    CAPTURE(rows);
    check_same({x}, {x * lr, lr * 3.0f, sqr(lr) + 1.0f},
               {Tensor::random_normal({rows, 5}, 0, 1, 1)});
  }
}

TEST_CASE("cuda_emu: reductions over every axis pattern") {
  Variable x = dtensor3("x");
  Tensor xv = Tensor::random_normal({3, 4, 5}, 0, 1, 3, Dtype::Float64);
  check_same({x},
             {sum(x), sum(x, 0), sum(x, 1), sum(x, 2), mean(x, std::vector<int>{0, 2}), max(x, 1),
              min(x, std::vector<int>{1, 2}), prod(x, 2, true)},
             {xv}, 1e-9, 1e-12);
}

TEST_CASE("cuda_emu: softmax, log_softmax and argmax rows") {
  Variable x = fmatrix("x");
  Tensor xv = Tensor::random_normal({6, 10}, 0, 3, 4);
  check_same({x}, {nnet::softmax(x), nnet::log_softmax(x * 1.5f), argmax(x, 1), argmax(x, 0)},
             {xv});
}

TEST_CASE("cuda_emu: a product broadcast over the rows it is added to is no gemm epilogue") {
  // Seed 30005's pattern: w - dot(row, w) with row (1, 3) broadcast over w's 3 rows; and
  // the same with the sum's other side, and a column product broadcast across columns.
  Variable w = tensor(Dtype::Float64, Shape{3, 3}, "w");
  Variable row = tensor(Dtype::Float64, Shape{1, 3}, "row");
  Variable col = tensor(Dtype::Float64, Shape{3, 1}, "col");
  Variable one = tensor(Dtype::Float64, Shape{1, 1}, "one");
  const Tensor wv = Tensor::random_normal({3, 3}, 0, 1, 4).astype(Dtype::Float64);
  const Tensor rv = Tensor::random_normal({1, 3}, 0, 1, 5).astype(Dtype::Float64);
  const Tensor cv = Tensor::random_normal({3, 1}, 0, 1, 6).astype(Dtype::Float64);
  const Tensor ov = Tensor::random_normal({1, 1}, 0, 1, 7).astype(Dtype::Float64);
  check_same({w, row, col, one},
             {w - dot(row, w), dot(row, w) + w, w + dot(col, one) * 2.0, w - dot(w, row.T())},
             {wv, rv, cv, ov}, 1e-12, 1e-12);
}

TEST_CASE("cuda_emu: an update to a slice whose start changes per call follows every call") {
  // Seed 40582's pattern: w <- x[i, -6] (and the same slice as an output), with i a new
  // value on every call, so the replayed graph must not keep the first capture's address.
  register_emu();
  Variable x = fmatrix("x");
  Variable i = iscalar("i");
  Variable w = shared(Tensor::scalar(0.0), "w");
  Variable wr = shared(Tensor::scalar(0.0), "wr");
  const Variable col(std::int64_t{-6});
  Function emu =
      function({x, i}, {subtensor(x, {i, col})}, {{w, subtensor(x, {i, col})}}, on("cuda_emu"));
  Function ref =
      function({x, i}, {subtensor(x, {i, col})}, {{wr, subtensor(x, {i, col})}}, on("reference"));
  const Tensor xs = Tensor::random_normal({9, 8}, 0, 1, 12);
  for (int call : {4, -9, 8, 2, 4, 7}) {
    CAPTURE(call);
    const Tensor idx = Tensor::scalar(call, Dtype::Int32);
    CHECK(emu({xs, idx})[0].item<float>() == ref({xs, idx})[0].item<float>());
    CHECK(w.get_value().item<float>() == wr.get_value().item<float>());
  }
}

TEST_CASE("cuda_emu: a cuBLAS gemm accumulating into a slice whose start changes per call") {
  register_emu();
  Variable x = fmatrix("x"), a = fmatrix("a"), b = fmatrix("b");
  Variable i = iscalar("i");
  Variable two(std::int64_t{2});
  Variable out = subtensor(x, {Slice(i, i + two)}) + dot(a, b);
  setenv("THEA_CUDA_SKINNY_GEMM", "0", 1);  // the cuBLAS path, which copies C_in first
  Function emu = function({x, i, a, b}, {out}, {}, on("cuda_emu"));
  unsetenv("THEA_CUDA_SKINNY_GEMM");
  Function ref = function({x, i, a, b}, {out}, {}, on("reference"));
  const Tensor xs = Tensor::random_normal({6, 3}, 0, 1, 21);
  const Tensor as = Tensor::random_normal({2, 4}, 0, 1, 22);
  const Tensor bs = Tensor::random_normal({4, 3}, 0, 1, 23);
  for (int start : {0, 3, 1, 4, 0, 2}) {
    CAPTURE(start);
    const Tensor idx = Tensor::scalar(start, Dtype::Int32);
    CHECK(allclose(emu({xs, idx, as, bs})[0], ref({xs, idx, as, bs})[0], 1e-5, 1e-5));
  }
  INFO(emu.debugprint());
}

TEST_CASE("cuda_emu: dot through the emulated cuBLAS, transposes included") {
  Variable a = fmatrix("a"), b = fmatrix("b");
  Tensor av = Tensor::random_normal({4, 3}, 0, 1, 5);
  Tensor bv = Tensor::random_normal({4, 5}, 0, 1, 6);
  check_same({a, b}, {dot(a.T(), b), dot(b.T(), a)}, {av, bv}, 1e-5, 1e-5);
}

TEST_CASE("cuda_emu: the MNIST softmax step with a device-resident dataset") {
  register_emu();
  const int n = 64, bs = 16, classes = 10, features = 12;
  const auto [xs, ys] = toy_dataset(n, features, classes, 7, 7);
  auto build = [&](const std::string& backend, Variable* w_out) {
    Variable trX = shared(xs, "trX");
    Variable trY = shared(ys, "trY");
    Variable w = shared(Tensor::random_normal({features, classes}, 0, 0.01, 8), "w");
    Variable X = fmatrix("X"), Y = fmatrix("Y");
    Variable py = nnet::softmax(dot(X, w));
    Variable cost = mean(nnet::categorical_crossentropy(py, Y));
    Variable g = grad(cost, w);
    Variable i = lscalar("i");
    Function train = function({i}, {cost}, {{w, w - g * 0.05f}},
                              {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})},
                               {Y, subtensor(trY, {Slice(i * bs, (i + 1) * bs)})}},
                              on(backend));
    Function predict = function({X}, {argmax(py, 1)}, {}, on(backend));
    *w_out = w;
    return std::make_pair(train, predict);
  };
  Variable w_ref, w_emu;
  auto [train_ref, pred_ref] = build("reference", &w_ref);
  auto [train_emu, pred_emu] = build("cuda_emu", &w_emu);
  for (int epoch = 0; epoch < 2; ++epoch)
    for (int i = 0; i < n / bs; ++i) {
      Tensor idx = Tensor::scalar(i, Dtype::Int64);
      auto c_ref = train_ref({idx});
      auto c_emu = train_emu({idx});
      CHECK(c_emu[0].item<double>() == doctest::Approx(c_ref[0].item<double>()).epsilon(1e-5));
    }
  CHECK(allclose(w_emu.get_value(), w_ref.get_value(), 1e-4, 1e-6));
  auto p_ref = pred_ref({xs});
  auto p_emu = pred_emu({xs});
  CHECK(allclose(p_emu[0], p_ref[0]));
  MESSAGE("train on cuda_emu:\n" << train_emu.debugprint());
}

TEST_CASE("cuda_emu: a minibatch index called again replays its own graph, uploading nothing") {
  register_emu();
  const int n = 48, bs = 16, classes = 10, features = 12;
  const auto [xs, ys] = toy_dataset(n, features, classes, 3, 17);
  // Two copies of the tutorial's resident step: one run by the reference backend, one whose
  // optimized graph is run by a CudaProgram on the emulator (its counters are the point).
  auto build = [&](Variable* w_out) {
    Variable trX = shared(xs, "trX"), trY = shared(ys, "trY");
    Variable w = shared(Tensor::random_normal({features, classes}, 0, 0.01, 18), "w");
    Variable X = fmatrix("X"), Y = fmatrix("Y");
    Variable cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
    Variable i = lscalar("i");
    *w_out = w;
    return function({i}, {cost}, {{w, w - grad(cost, w) * 0.05f}},
                    {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})},
                     {Y, subtensor(trY, {Slice(i * bs, (i + 1) * bs)})}},
                    on("reference"));
  };
  Variable w_ref, w_emu;
  Function ref = build(&w_ref);
  Function emu_graph = build(&w_emu);
  cuda::CudaProgram prog(cuda::emu_runtime(), emu_graph.graph(), cuda::lower(emu_graph.graph()));
  const cuda::ProgramStats& st = prog.stats();
  std::size_t uploads_before = 0, call_replays_before = 0;
  for (int epoch = 0; epoch < 4; ++epoch) {
    CAPTURE(epoch);
    uploads_before = st.args_uploads;
    call_replays_before = st.call_graph_launches;
    for (int i = 0; i < n / bs; ++i) {
      CAPTURE(i);
      Tensor idx = Tensor::scalar(i, Dtype::Int64);
      const double want = ref({idx})[0].item<double>();
      CHECK(prog.run({idx})[0].item<double>() == doctest::Approx(want).epsilon(1e-5));
    }
  }
  // The last epoch: every call replayed its key's graph; no argument block went up.
  CHECK(st.call_graph_launches - call_replays_before == n / bs);
  CHECK(st.args_uploads == uploads_before);
  CHECK(st.instances == 1);
  CHECK(allclose(w_emu.get_value(), w_ref.get_value(), 1e-4, 1e-6));
}

TEST_CASE("cuda_emu: a softmax of its own, with cuDNN asked for (none here) and not") {
  register_emu();
  cuda_tests::standalone_softmax_case("cuda_emu");
}

TEST_CASE("cuda_emu: outputs come back lazily, stay right across the ring and the program") {
  register_emu();
  cuda_tests::lazy_outputs_case("cuda_emu");
}

TEST_CASE("cuda_emu: the tutorial step with skinny gemms on odd shapes, and the cuBLAS path") {
  // 37 features (not a multiple of the warp), 7 classes, batches of 5 sliced by index from a
  // resident set: the forward product reads the slice in place, the update writes w in place.
  register_emu();
  const int n = 40, bs = 5, classes = 7, features = 37;
  Tensor xs = Tensor::random_normal({n, features}, 0, 1, 21);
  Tensor ys = Tensor::zeros({n, classes});
  for (int i = 0; i < n; ++i) ys.set({i, (i * 3) % classes}, 1.0);
  auto build = [&](const std::string& backend, bool skinny, Variable* w_out) {
    if (!skinny) setenv("THEA_CUDA_SKINNY_GEMM", "0", 1);
    Variable trX = shared(xs, "trX"), trY = shared(ys, "trY");
    Variable w = shared(Tensor::random_normal({features, classes}, 0, 0.1, 22), "w");
    Variable X = fmatrix("X"), Y = fmatrix("Y");
    Variable py = nnet::softmax(dot(X, w));
    Variable cost = mean(nnet::categorical_crossentropy(py, Y));
    Variable i = lscalar("i");
    Function train = function({i}, {cost}, {{w, w - grad(cost, w) * 0.3f}},
                              {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})},
                               {Y, subtensor(trY, {Slice(i * bs, (i + 1) * bs)})}},
                              on(backend));
    Function predict = function({}, {py}, {}, {{X, trX}}, on(backend));
    unsetenv("THEA_CUDA_SKINNY_GEMM");
    *w_out = w;
    return std::make_pair(train, predict);
  };
  Variable w_ref, w_sk, w_bl;
  auto [train_ref, pred_ref] = build("reference", true, &w_ref);
  auto [train_sk, pred_sk] = build("cuda_emu", true, &w_sk);
  auto [train_bl, pred_bl] = build("cuda_emu", false, &w_bl);
  const std::string plan_sk = train_sk.debugprint(), plan_bl = train_bl.debugprint();
  INFO(plan_sk);
  INFO(plan_bl);
  CHECK(plan_sk.find("skinny") != std::string::npos);
  CHECK(plan_sk.find("indirect") == std::string::npos);
  CHECK(plan_bl.find("skinny") == std::string::npos);
  CHECK(plan_bl.find("indirect") != std::string::npos);
  for (int epoch = 0; epoch < 3; ++epoch) {  // eager, capture, replays
    for (int i = 0; i < n / bs; ++i) {
      CAPTURE(epoch);
      CAPTURE(i);
      Tensor idx = Tensor::scalar(i, Dtype::Int64);
      const double c_ref = train_ref({idx})[0].item<double>();
      CHECK(train_sk({idx})[0].item<double>() == doctest::Approx(c_ref).epsilon(1e-5));
      CHECK(train_bl({idx})[0].item<double>() == doctest::Approx(c_ref).epsilon(1e-5));
    }
    CHECK(allclose(w_sk.get_value(), w_ref.get_value(), 1e-4, 1e-6));
    CHECK(allclose(w_bl.get_value(), w_ref.get_value(), 1e-4, 1e-6));
    CHECK(allclose(pred_sk({})[0], pred_ref({})[0], 1e-4, 1e-6));
  }
}

TEST_CASE("cuda_emu: many replayed steps without outputs, read by a second function") {
  // > 64 calls wrap the argument ring; predict runs on another stream and must see every
  // update (the writer's event is recorded lazily, when predict needs it).
  register_emu();
  const int n = 32, bs = 2, classes = 3, features = 3;
  Tensor xs = Tensor::random_normal({n, features}, 0, 1, 11);
  Tensor ys = Tensor::zeros({n, classes});
  for (int i = 0; i < n; ++i) ys.set({i, (i * 5) % classes}, 1.0);
  auto build = [&](const std::string& backend, Variable* w_out) {
    Variable trX = shared(xs, "trX"), trY = shared(ys, "trY");
    Variable w = shared(Tensor::random_normal({features, classes}, 0, 0.1, 12), "w");
    Variable X = fmatrix("X"), Y = fmatrix("Y");
    Variable py = nnet::softmax(dot(X, w));
    Variable cost = mean(nnet::categorical_crossentropy(py, Y));
    Variable i = lscalar("i");
    Function train = function({i}, {}, {{w, w - grad(cost, w) * 0.5f}},
                              {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})},
                               {Y, subtensor(trY, {Slice(i * bs, (i + 1) * bs)})}},
                              on(backend));
    Function predict = function({}, {py}, {}, {{X, trX}}, on(backend));
    *w_out = w;
    return std::make_pair(train, predict);
  };
  Variable w_ref, w_emu;
  auto [train_ref, pred_ref] = build("reference", &w_ref);
  auto [train_emu, pred_emu] = build("cuda_emu", &w_emu);
  for (int epoch = 0; epoch < 5; ++epoch) {
    for (int i = 0; i < n / bs; ++i) {
      Tensor idx = Tensor::scalar(i, Dtype::Int64);
      CHECK(train_ref({idx}).empty());
      CHECK(train_emu({idx}).empty());
    }
    CAPTURE(epoch);
    CHECK(allclose(pred_emu({})[0], pred_ref({})[0], 1e-4, 1e-6));
  }
  CHECK(allclose(w_emu.get_value(), w_ref.get_value(), 1e-4, 1e-6));
}

TEST_CASE("cuda_emu: long rows use several warps per row (shared-memory combine)") {
  Variable x = fmatrix("x"), v = fvector("v");
  Tensor xv = Tensor::random_normal({3, 1000}, 0, 1, 11);
  Tensor vv = Tensor::random_normal({70000}, 0, 1, 12);  // grid-stride loops
  check_same({x, v},
             {sum(x, 1), max(x, 1), argmax(x, 1), argmin(x, 1), nnet::softmax(x),
              nnet::log_softmax(x), mean(x), sum(v), argmax(v), exp(v) * 2.0f},
             {xv, vv}, 1e-5, 1e-5);
}

TEST_CASE("cuda_emu: calls alternating shapes and host scalars reuse their resolved state") {
  register_emu();
  Variable x = fmatrix("x"), s = fscalar("s");
  Variable k = lscalar("k");
  Variable y = sum(subtensor(x, {Slice(k, std::nullopt)}) * s, 1);
  Function ref = function({x, s, k}, {y}, {}, on("reference"));
  Function emu = function({x, s, k}, {y}, {}, on("cuda_emu"));
  Tensor a = Tensor::random_normal({5, 3}, 0, 1, 1), b = Tensor::random_normal({7, 4}, 0, 1, 2);
  for (int round = 0; round < 3; ++round)
    for (const Tensor& t : {a, b})
      for (double sv : {0.5, -2.0})
        for (std::int64_t kv : {0, 2}) {
          std::vector<Tensor> args = {t, Tensor::scalar(sv),
                                      Tensor::scalar(static_cast<double>(kv), Dtype::Int64)};
          CHECK(allclose(emu(args)[0], ref(args)[0], 1e-5, 1e-6));
        }
}

TEST_CASE("cuda_emu: shared variables move between backends and functions") {
  register_emu();
  Variable w = shared(Tensor::from_list({{1, 2}, {3, 4}}), "w");
  Variable x = fmatrix("x");
  Function step_dev = function({x}, {sum(w)}, {{w, w * 2.0f + x}}, on("cuda_emu"));
  Function step_ref = function({x}, {sum(w)}, {{w, w * 2.0f + x}}, on("reference"));
  Function read_dev = function({}, {w * 1.0f}, {}, on("cuda_emu"));
  Tensor one = Tensor::ones({2, 2});
  CHECK(step_dev({one})[0].item<float>() == 10);  // w becomes 2w + 1 on the device
  CHECK(allclose(w.get_value(), Tensor::from_list({{3, 5}, {7, 9}})));
  CHECK(step_ref({one})[0].item<float>() == 24);  // the host reads the device copy back
  CHECK(step_dev({one})[0].item<float>() == 52);  // ...and the device re-reads the host's
  w.set_value(Tensor::from_list({{0, 0}, {0, 1}}));
  CHECK(allclose(read_dev({})[0], Tensor::from_list({{0, 0}, {0, 1}})));
  CHECK(step_dev({one})[0].item<float>() == 1);
  CHECK(allclose(w.get_value(), Tensor::from_list({{1, 1}, {1, 3}})));
}

TEST_CASE("cuda_emu: a weight the cpu training step keeps transposed moves to the device") {
  register_emu();
  // The cpu step holds w as its transposed copy (a DeviceMirror) between calls; the emulated
  // device step must fetch the row-major value from it, and the cpu step must re-read the
  // device's value after it.
  Tensor w0 = random_normal({20, 3}, 0.0, 0.1, 5);
  Variable X = fmatrix("X"), Y = fmatrix("Y");
  Variable w = shared(w0.clone(), "w"), wr = shared(w0.clone(), "w");
  auto step = [&](Variable& v, const std::string& backend) {
    auto cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, v)), Y));
    return function({X, Y}, {cost}, {{v, v - grad(cost, v) * 0.5f}}, on(backend));
  };
  Function cpu_step = step(w, "cpu"), dev_step = step(w, "cuda_emu"),
           ref_step = step(wr, "reference");
  if (cpu_step.backend_name() != "cpu") {
    MESSAGE("skipped: no cpu backend here (" << cpu_step.backend_name() << ")");
    return;
  }
  CHECK(cpu_step.debugprint().find("kept transposed between calls") != std::string::npos);
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    Tensor x = random_uniform({70, 20}, 0.0, 1.0, 40 + i);
    Tensor y = Tensor::zeros({70, 3});
    for (int r = 0; r < 70; ++r) y.set({r, (r * 5 + i) % 3}, 1.0);
    Function& f = i % 3 == 2 ? dev_step : cpu_step;
    CHECK(f({x, y})[0].item<float>() ==
          doctest::Approx(ref_step({x, y})[0].item<float>()).epsilon(1e-4));
  }
  CHECK(allclose(w.get_value(), wr.get_value(), 1e-4, 1e-5));
}

TEST_CASE("cuda_emu: values whose lifetimes do not overlap share the instance's arena") {
  register_emu();
  // Three cuBLAS products (64 columns: not the skinny kernel), each followed by a map: six
  // stored temporaries, each read only by the next step.
  Variable x = fmatrix("x");
  Variable a = shared(Tensor::random_normal({64, 64}, 0, 0.2, 1), "a");
  Variable b = shared(Tensor::random_normal({64, 64}, 0, 0.2, 2), "b");
  Variable c = shared(Tensor::random_normal({64, 64}, 0, 0.2, 3), "c");
  Variable h = tanh(dot(tanh(dot(tanh(dot(x, a)), b)), c));
  Variable out = sum(h, {1});
  Function ref = function({x}, {out}, {}, on("reference"));
  cuda::CudaProgram prog(cuda::emu_runtime(), ref.graph(), cuda::lower(ref.graph()));
  const Tensor xs = random_uniform({40, 64}, -1.0, 1.0, 9);
  const Tensor want = ref({xs})[0];
  for (int call = 0; call < 3; ++call) {  // eager, capture, replay
    CAPTURE(call);
    const std::vector<Tensor> got = prog.run({xs});
    CHECK(allclose(got[0], want, 1e-5, 1e-5));
  }
  const cuda::ProgramStats& st = prog.stats();
  INFO(prog.describe());
  CHECK(st.instances == 1);
  // One buffer per value: x, 3 products, 2 maps (the last tanh is fused into the row sums),
  // the sums. A step's input and output are live together, so the arena holds two 10 KiB
  // values at a time, plus the small output.
  CHECK(st.unshared_bytes >= 6 * 40 * 64 * 4);
  CHECK(st.arena_bytes <= 2 * 40 * 64 * 4 + 256);
  // Another shape is another instance with its own arena.
  const Tensor xs2 = random_uniform({7, 64}, -1.0, 1.0, 10);
  CHECK(allclose(prog.run({xs2})[0], ref({xs2})[0], 1e-5, 1e-5));
  CHECK(st.instances == 2);
}

TEST_CASE("cuda_emu: random graphs agree with the reference") {
  register_emu();
  // Few graphs in CI (the emulator compiles with the host compiler); scripts/gpu-check
  // runs hundreds on the GPU. THEA_EMU_FUZZ raises the count.
  int n = 24;
  if (const char* env = std::getenv("THEA_EMU_FUZZ")) n = std::atoi(env);
  CHECK(cuda_tests::fuzz_backend("cuda_emu", 1000, n, 8) == 0);
}

// Seeds of the shared generator (v1) that found CUDA-backend bugs: 11, 16, 19 (a memoized
// call reused the first call's input tensors in host steps), 117 (a copy kernel wrote a
// dynamic view's output through an unassigned argument slot), 30005 (w - dot(row, w), the
// product broadcast over w's rows, was lowered as a gemm into w), 40582 (an update to
// x[i, -6] copied from the slice's address at capture time, not this call's); with the
// schedule's groups, 70048 and 70242 (a kernel writing one update in place also stored a
// value a later kernel read, but in-place steps run last).
TEST_CASE("cuda_emu: fuzz regression seeds") {
  register_emu();
  REQUIRE(fuzz::kGeneratorVersion == 1);
  for (std::uint64_t seed : {11, 16, 19, 117, 30005, 40582, 70048, 70242}) {
    FunctionOptions a, b;
    a.backend = "cuda_emu";
    b.backend = "reference";
    const auto r = fuzz::compare_backends(seed, a, b);
    CHECK_MESSAGE(r.ok, r.message);
  }
}

// The project's shared random-graph generator (tests/fuzz): shared variables with updates,
// symbolic slices, take/inc_rows, concatenate, the SGD gemm pattern, several calls each.
TEST_CASE("cuda_emu: the shared fuzz generator's graphs agree with the reference") {
  register_emu();
  cuda_tests::fuzz_generator_vs_reference("cuda_emu", 1, 40, 1e9,
                                          std::getenv("THEA_FUZZ_VERBOSE") != nullptr);
}

// The backend's own row groups (THEA_CUDA_LOWERING=legacy), kept until a GPU compares them
// with the shared schedule's groups: the tutorial step and a few of the shared graphs.
TEST_CASE("cuda_emu: the legacy lowering still agrees with the reference") {
  register_emu();
  cuda_tests::ScopedEnv env("THEA_CUDA_LOWERING", "legacy");
  cuda_tests::fuzz_generator_vs_reference("cuda_emu", 1, 12, 1e9,
                                          std::getenv("THEA_FUZZ_VERBOSE") != nullptr);
}

// The same graphs with every call made three times over: a call key's first return finds
// its memoized state, the next replays the graph captured for it, against the reference
// backend making the same calls (shared variables keep updating throughout).
TEST_CASE("cuda_emu: the shared fuzz generator's graphs, their calls repeated (call-key graphs)") {
  register_emu();
  cuda_tests::fuzz_generator_vs_reference("cuda_emu", 500, 16, 1e9,
                                          std::getenv("THEA_FUZZ_VERBOSE") != nullptr, 3);
}

#endif  // THEA_HAVE_CUDA
