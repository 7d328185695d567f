// gpu_bench: the Theano MNIST softmax tutorial on the CUDA backend, timed.
//   gpu_bench --data data/mnist --epochs 100 --json out.json
// Trains with the dataset resident on the device (Theano's givens idiom: the train function
// takes the minibatch index and slices the shared training set on the device), prints the
// tutorial's accuracy table, and reports ms per epoch (468 steps + the 10k test pass),
// compile times cold (empty kernel cache) and warm, and the variants: with/without reading
// the cost every step, with/without CUDA graphs, the products as generated skinny-gemm
// kernels (the default for <= 32 output columns; the logits product and the mean cost
// inside the row kernel) or separate kernels (THEA_CUDA_SKINNY_GEMM=nofuse) or cuBLAS
// (THEA_CUDA_SKINNY_GEMM=0), the backend's own row groups instead of the shared schedule's
// groups (THEA_CUDA_LOWERING=legacy, also with THEA_CUDA_FUSE_TOTAL=0), and the
// host-minibatch path of the app.
// Every model is thea::models::build_softmax_regression, the app's.
#include <fmt/core.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "thea/data/mnist.hpp"
#include "thea/models/softmax_regression.hpp"
#include "thea/thea.hpp"

#if THEA_HAVE_CUDA
#include "cuda/cuda_backend.hpp"
#include "cuda/device.hpp"
#endif

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using namespace thea;

namespace {

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double accuracy(const Tensor& pred, const Tensor& labels) {
  return labels.numel() ? models::accuracy(pred, labels) : 0;
}

struct Model {
  Variable w;
  Function train;    // train(i) -> {cost} or {} (updates only)
  Function predict;  // predict() on the resident test set, or predict(teX) -> labels
  bool resident_test = true;
  double compile_s = 0;
};

// The tutorial's model (models/) with the training set shared and sliced on the device by
// index. data.test_x: the test set as a shared variable (resident on the device, as PyTorch's
// baseline keeps it), or empty to upload the host test set each epoch as the tutorial does.
// compile_s: the two functions timed (the builder compiles these first, on a cold cache).
// gemm_mode: THEA_CUDA_SKINNY_GEMM while compiling ("" default: skinny kernels, the logits
// product inside the row kernel; "nofuse": skinny kernels of their own; "0": cuBLAS).
Model build(const std::string& backend, models::ResidentData data, bool read_cost,
            std::uint64_t seed, const std::string& gemm_mode = "") {
  // The switch is read when the functions are lowered (compiled), not when they run.
  if (!gemm_mode.empty()) setenv("THEA_CUDA_SKINNY_GEMM", gemm_mode.c_str(), 1);
  struct Restore {
    bool on;
    ~Restore() {
      if (on) unsetenv("THEA_CUDA_SKINNY_GEMM");
    }
  } restore{!gemm_mode.empty()};
  models::SoftmaxRegressionOptions o;
  o.backend = backend;
  o.seed = seed;
  data.return_cost = read_cost;
  o.resident = data;
  models::SoftmaxRegression m = models::build_softmax_regression(o);
  const bool resident_test = m.predict_test.has_value();
  Function predict = resident_test ? *m.predict_test : m.predict;
  return {m.w, *m.train_index, predict, resident_test,
          m.train_index->compile_seconds() + predict.compile_seconds()};
}

struct RunResult {
  std::vector<double> epoch_ms;
  std::vector<double> acc;
  double mean_cost = 0;  // of the last epoch, when the costs were read
};

// wait_cost: read every step's cost on the host (waiting for the device each step), which
// the tutorial does not do: its `cost = train(...)` is never read, and thea returns the
// cost without waiting (the copy lands in the background; a read would wait for it).
RunResult run(Model& m, const Tensor& teX, const Tensor& te_labels, std::int64_t steps, int epochs,
              bool print_table, bool wait_cost = false) {
  RunResult r;
  std::vector<Tensor> idx;
  for (std::int64_t s = 0; s < steps; ++s)
    idx.push_back(Tensor::scalar(static_cast<double>(s), Dtype::Int64));
  for (int e = 0; e < epochs; ++e) {
    auto t0 = Clock::now();
    double cost_sum = 0;
    for (std::int64_t s = 0; s < steps; ++s) {
      std::vector<Tensor> out = m.train({idx[static_cast<std::size_t>(s)]});
      if (wait_cost && !out.empty()) cost_sum += out[0].item<double>();
    }
    r.mean_cost = steps ? cost_sum / static_cast<double>(steps) : 0;
    Tensor pred = m.resident_test ? m.predict({})[0] : m.predict({teX})[0];
    r.epoch_ms.push_back(since(t0) * 1e3);
    r.acc.push_back(accuracy(pred, te_labels));
    if (print_table) fmt::print("{:03d} {:.4f}\n", e, r.acc.back());
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"thea CUDA benchmark: the MNIST softmax tutorial with the dataset on the GPU"};
  std::string data = "data/mnist", json_path, backend = "cuda";
  int epochs = 100, variant_epochs = 5;
  std::int64_t bs = 128, ntrain = -1, ntest = -1;
  app.add_option("--data", data, "MNIST directory (raw or .gz files)");
  app.add_option("--epochs", epochs, "epochs of the main run (the tutorial: 100)");
  app.add_option("--variant-epochs", variant_epochs, "epochs for each variant run");
  app.add_option("--backend", backend, "backend to time (cuda, or cuda_emu/cpu for a dry run)");
  app.add_option("--json", json_path, "write the results as JSON here");
  app.add_option("--ntrain", ntrain, "training examples (-1: all; small for dry runs)");
  app.add_option("--ntest", ntest, "test examples (-1: all)");
  CLI11_PARSE(app, argc, argv);

  try {
    std::string cache =
        fs::temp_directory_path() / ("thea-gpu-bench-cache-" + std::to_string(::getpid()));
    fs::remove_all(cache);
    setenv("THEA_CACHE_DIR", cache.c_str(), 1);
#if THEA_HAVE_CUDA
    std::string device = backend == "cuda" ? cuda::device().name : backend;
#else
    std::string device = backend;
#endif
    auto t_load = Clock::now();
#if THEA_HAVE_CUDA
    if (backend == "cuda_emu") register_backend("cuda_emu", &make_cuda_emu_backend);
#endif
    data::Mnist d = data::load_mnist(data, ntrain, ntest);
    const double load_s = since(t_load);
    // The tutorial's zip(range(0, n, bs), range(bs, n, bs)): full batches only (468).
    const std::int64_t n_steps = (d.trX.shape()[0] - 1) / bs;
    // One copy of the dataset on the device, shared by every model below.
    const models::ResidentData data = models::make_resident_data(d.trX, d.trY, d.teX, bs);
    models::ResidentData no_test = data;
    no_test.test_x = Variable();

    // Cold compile: empty kernel cache. Warm: the same graphs again (disk cache hits).
    Model m = build(backend, data, true, 42);
    const double cold_s = m.compile_s;
    Model warm = build(backend, data, true, 42);
    const double warm_s = warm.compile_s;
    fmt::print(
        "device: {}\nbackend: {}\nload: {:.3f} s\ncompile train+predict: cold {:.3f} s, "
        "warm {:.4f} s\nsteps per epoch: {} (batch {})\n",
        device, backend, load_s, cold_s, warm_s, n_steps, bs);
    fmt::print("train schedule ({} kernels):\n{}", m.train.kernel_count(), m.train.debugprint());

    // The main run: the tutorial, 100 epochs, the cost returned every step as the tutorial
    // does (and, as there, not read).
    auto t_main = Clock::now();
    RunResult main = run(m, d.teX, d.te_labels, n_steps, epochs, true);
    const double main_s = since(t_main);
    std::vector<double> steady(
        main.epoch_ms.begin() + std::min<std::size_t>(1, main.epoch_ms.size()),
        main.epoch_ms.end());
    fmt::print(
        "ms/epoch: first {:.3f}, median {:.3f}, mean {:.3f} (total {:.2f} s)\n",
        main.epoch_ms.empty() ? 0 : main.epoch_ms[0], median(steady),
        steady.empty() ? 0 : std::accumulate(steady.begin(), steady.end(), 0.0) / steady.size(),
        main_s);

    // Variants, a few epochs each.
    struct Variant {
      std::string name;
      double ms = 0;
      double acc = 0;
    };
    std::vector<Variant> variants;
    double gemm_skinny_ms = 0, gemm_nofuse_ms = 0, gemm_cublas_ms = 0, mean_kernel_ms = 0;
    double legacy_ms = 0;
    struct Breakdown {
      std::string name;
      double host_us_per_step, drain_ms, test_ms;
    };
    std::vector<Breakdown> breakdown;
    // Where an epoch goes: host time to enqueue the steps (no sync), the wait for the device
    // to drain them, and the test pass.
    auto measure_breakdown = [&](const std::string& name, Model& bm) {
      std::vector<Tensor> idx;
      for (std::int64_t s = 0; s < n_steps; ++s)
        idx.push_back(Tensor::scalar(static_cast<double>(s), Dtype::Int64));
      bm.w.get_value();
      auto t0 = Clock::now();
      for (std::int64_t s = 0; s < n_steps; ++s) bm.train({idx[static_cast<std::size_t>(s)]});
      const double host_s = since(t0);
      bm.w.get_value();
      const double drain_s = since(t0) - host_s;
      auto t1 = Clock::now();
      bm.predict({});
      const double pred_s = since(t1);
      fmt::print(
          "breakdown {:<13} host {:7.2f} us/step, device drain after {:7.3f} ms, test pass "
          "{:7.3f} ms\n",
          name, host_s * 1e6 / static_cast<double>(n_steps), drain_s * 1e3, pred_s * 1e3);
      breakdown.push_back(
          {name, host_s * 1e6 / static_cast<double>(n_steps), drain_s * 1e3, pred_s * 1e3});
    };
    auto add_variant = [&](const std::string& name, Model& vm) {
      run(vm, d.teX, d.te_labels, n_steps, 1, false);  // warm-up (graph capture)
      RunResult r = run(vm, d.teX, d.te_labels, n_steps, variant_epochs, false);
      variants.push_back({name, median(r.epoch_ms), r.acc.back()});
      fmt::print("variant {:<28} {:8.3f} ms/epoch  acc {:.4f}\n", name, variants.back().ms,
                 variants.back().acc);
    };
    {
      // The tutorial's literal predict(teX): the 31 MB test set uploaded every epoch.
      Model ht = build(backend, no_test, true, 42);
      add_variant("host_test_set (upload teX)", ht);
    }
    {
      Model u = build(backend, data, false, 42);
      add_variant("updates_only (no cost read)", u);
      // The cost read on the host every step: one device round trip per step.
      run(m, d.teX, d.te_labels, n_steps, 1, false, true);
      RunResult wc = run(m, d.teX, d.te_labels, n_steps, variant_epochs, false, true);
      variants.push_back({"cost_waited_each_step", median(wc.epoch_ms), wc.acc.back()});
      fmt::print("variant {:<28} {:8.3f} ms/epoch  acc {:.4f}  mean cost {:.5f}\n",
                 variants.back().name, variants.back().ms, variants.back().acc, wc.mean_cost);
      measure_breakdown("updates_only", u);
      measure_breakdown("cost_read", m);
    }
    {
      // The same tutorial with both products on cuBLAS (gemm through device pointer arrays,
      // since the slice start is per call), against the skinny kernels, same epochs each.
      Model sk = build(backend, data, true, 42);
      add_variant("skinny_gemm (default)", sk);
      const double skinny_ms = variants.back().ms;
      Model nf = build(backend, data, true, 42, "nofuse");
      add_variant("skinny_gemm nofuse", nf);
      gemm_nofuse_ms = variants.back().ms;
      // The backend's own row groups (THEA_CUDA_LOWERING=legacy) against the shared
      // schedule's groups (the default), and there the mean cost as a reduce kernel of its
      // own instead of inside the row kernel.
      setenv("THEA_CUDA_LOWERING", "legacy", 1);
      Model lg = build(backend, data, true, 42);
      add_variant("legacy_lowering (row groups)", lg);
      legacy_ms = variants.back().ms;
      setenv("THEA_CUDA_FUSE_TOTAL", "0", 1);
      Model nt = build(backend, data, true, 42);
      unsetenv("THEA_CUDA_FUSE_TOTAL");
      unsetenv("THEA_CUDA_LOWERING");
      add_variant("legacy mean_kernel (FUSE_TOTAL=0)", nt);
      mean_kernel_ms = variants.back().ms;
      Model cb = build(backend, data, true, 42, "0");
      fmt::print("cuBLAS train schedule ({} kernels):\n{}", cb.train.kernel_count(),
                 cb.train.debugprint());
      add_variant("cublas_gemm (SKINNY_GEMM=0)", cb);
      gemm_skinny_ms = skinny_ms;
      gemm_cublas_ms = variants.back().ms;
      fmt::print(
          "gemm path: skinny (fused) {:.3f} ms/epoch, skinny nofuse {:.3f}, legacy mean kernel "
          "{:.3f}, cuBLAS {:.3f} ms/epoch ({:.2f}x)\n",
          skinny_ms, gemm_nofuse_ms, mean_kernel_ms, gemm_cublas_ms,
          skinny_ms > 0 ? gemm_cublas_ms / skinny_ms : 0.0);
      fmt::print("lowering: schedule {:.3f} ms/epoch, legacy row groups {:.3f} ({:.2f}x)\n",
                 skinny_ms, legacy_ms, skinny_ms > 0 ? legacy_ms / skinny_ms : 0.0);
      Model cbu = build(backend, data, false, 42, "0");
      add_variant("cublas_gemm updates_only", cbu);
      measure_breakdown("cublas_updates_only", cbu);
      measure_breakdown("cublas_cost_read", cb);
    }
    {
      // One graph per shape: the argument block (the minibatch's slice pointers) is uploaded
      // before every replay, as before call keys had graphs of their own.
      setenv("THEA_CUDA_CALL_GRAPHS", "0", 1);
      Model cg = build(backend, data, true, 42);
      add_variant("shape_graphs (CALL_GRAPHS=0)", cg);
      unsetenv("THEA_CUDA_CALL_GRAPHS");
      setenv("THEA_CUDA_GRAPHS", "0", 1);
      Model ng = build(backend, data, true, 42);
      add_variant("no_cuda_graphs", ng);
      unsetenv("THEA_CUDA_GRAPHS");
    }
    {
      // The app's --no-resident path: host minibatches uploaded every step.
      models::SoftmaxRegressionOptions o;
      o.backend = backend;
      o.seed = 42;
      models::SoftmaxRegression hm = models::build_softmax_regression(o);
      Function& train = hm.train;
      Function& predict = hm.predict;
      std::vector<Tensor> xs, ys;
      for (std::int64_t s = 0; s < n_steps; ++s) {
        xs.push_back(d.trX.slice(0, s * bs, (s + 1) * bs));
        ys.push_back(d.trY.slice(0, s * bs, (s + 1) * bs));
      }
      std::vector<double> ms;
      double acc = 0;
      for (int e = 0; e < variant_epochs + 1; ++e) {
        auto t0 = Clock::now();
        for (std::int64_t s = 0; s < n_steps; ++s)
          train({xs[static_cast<std::size_t>(s)], ys[static_cast<std::size_t>(s)]});
        acc = accuracy(predict({d.teX})[0], d.te_labels);
        if (e > 0) ms.push_back(since(t0) * 1e3);
      }
      variants.push_back({"host_minibatches (app path)", median(ms), acc});
      fmt::print("variant {:<28} {:8.3f} ms/epoch  acc {:.4f}\n", variants.back().name,
                 variants.back().ms, acc);
    }

    // Softmax alone: thea's row kernel (THEA_CUDA_CUDNN=0) vs cuDNN (the default), per call
    // of a function updating y <- softmax(x) on the device (no host transfers), 2000 calls.
    struct SoftmaxTime {
      std::string shape;
      double thea_us = 0, cudnn_us = 0;
    };
    std::vector<SoftmaxTime> softmax_times;
    if (backend == "cuda") {
      for (Shape sh : {Shape{128, 10}, Shape{10000, 10}, Shape{4096, 1024}}) {
        SoftmaxTime t;
        t.shape = shape_str(sh);
        for (int dnn = 0; dnn < 2; ++dnn) {
          setenv("THEA_CUDA_CUDNN", dnn ? "1" : "0", 1);
          Variable x = shared(random_normal(sh, 0, 1, 5), "x");
          Variable y = shared(Tensor::zeros(sh), "y");
          FunctionOptions o;
          o.backend = backend;
          Function f = function({}, {}, {{y, nnet::softmax(x)}}, o);
          unsetenv("THEA_CUDA_CUDNN");
          for (int k = 0; k < 20; ++k) f({});
          y.get_value();
          auto t0 = Clock::now();
          const int reps = 2000;
          for (int k = 0; k < reps; ++k) f({});
          y.get_value();
          (dnn ? t.cudnn_us : t.thea_us) = since(t0) * 1e6 / reps;
        }
        softmax_times.push_back(t);
        fmt::print("softmax {:<12} thea {:8.2f} us/call  cuDNN {:8.2f} us/call\n", t.shape,
                   t.thea_us, t.cudnn_us);
      }
    }

    if (!json_path.empty()) {
      std::ofstream j(json_path);
      j << "{\n  \"device\": \"" << device << "\",\n  \"backend\": \"" << backend << "\",\n"
        << "  \"epochs\": " << epochs << ",\n  \"steps_per_epoch\": " << n_steps << ",\n"
        << "  \"compile_cold_s\": " << cold_s << ",\n  \"compile_warm_s\": " << warm_s << ",\n"
        << "  \"ms_per_epoch_first\": " << (main.epoch_ms.empty() ? 0 : main.epoch_ms[0]) << ",\n"
        << "  \"ms_per_epoch_median\": " << median(steady) << ",\n"
        << "  \"total_s\": " << main_s << ",\n"
        << "  \"final_accuracy\": " << (main.acc.empty() ? 0 : main.acc.back()) << ",\n"
        << "  \"accuracy\": [";
      for (std::size_t k = 0; k < main.acc.size(); ++k) j << (k ? ", " : "") << main.acc[k];
      j << "],\n  \"variants\": {";
      for (std::size_t k = 0; k < variants.size(); ++k)
        j << (k ? ", " : "") << "\n    \"" << variants[k].name
          << "\": {\"ms_per_epoch\": " << variants[k].ms << ", \"accuracy\": " << variants[k].acc
          << "}";
      j << "\n  },\n  \"gemm_path\": {\"skinny_ms_per_epoch\": " << gemm_skinny_ms
        << ", \"skinny_nofuse_ms_per_epoch\": " << gemm_nofuse_ms
        << ", \"mean_kernel_ms_per_epoch\": " << mean_kernel_ms
        << ", \"legacy_lowering_ms_per_epoch\": " << legacy_ms
        << ", \"cublas_ms_per_epoch\": " << gemm_cublas_ms << "}";
      j << ",\n  \"breakdown\": {";
      for (std::size_t k = 0; k < breakdown.size(); ++k)
        j << (k ? ", " : "") << "\n    \"" << breakdown[k].name
          << "\": {\"host_us_per_step\": " << breakdown[k].host_us_per_step
          << ", \"drain_ms\": " << breakdown[k].drain_ms
          << ", \"test_ms\": " << breakdown[k].test_ms << "}";
      j << "\n  },\n  \"softmax_us\": {";
      for (std::size_t k = 0; k < softmax_times.size(); ++k)
        j << (k ? ", " : "") << "\n    \"" << softmax_times[k].shape
          << "\": {\"thea\": " << softmax_times[k].thea_us
          << ", \"cudnn\": " << softmax_times[k].cudnn_us << "}";
      j << "\n  }\n}\n";
    }
    fs::remove_all(cache);
  } catch (const std::exception& e) {
    fmt::print(stderr, "gpu_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
