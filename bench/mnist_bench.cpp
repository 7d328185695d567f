// mnist_bench: the Theano MNIST softmax tutorial, timed, through thea's graph API.
//   mnist_bench --backend cpu                 # 100 epochs, the tutorial's exact task
//   mnist_bench --backend reference --epochs 10 --json ref.json
// One epoch = 468 SGD steps on minibatches of 128 taken in order + a prediction pass over
// the 10 000 test images. Reports s/epoch, total, accuracies, compile time cold (fresh
// THEA_CACHE_DIR) and warm (same process; new process on the same cache), peak RSS, threads
// and per-call overhead, then one JSON line, last on stdout, for bench/run-mnist.
// Exit status: 0 success, 1 runtime error (data, backend), 2 usage error.
#include <fmt/core.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "thea/data/mnist.hpp"
#include "thea/models/softmax_regression.hpp"
#include "thea/thea.hpp"

extern char** environ;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// The tutorial's printed accuracies (Theano on a GPU, float32): the bar is ±0.003.
const std::map<std::int64_t, double> kTutorialAccuracy = {
    {0, 0.8862}, {1, 0.8985}, {9, 0.9163}, {99, 0.9248}};

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double peak_rss_mib() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Threads the process holds now (the backend's pool included), from /proc/self/status.
int os_threads() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  return -1;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

std::string json_str(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// A number for JSON: non-finite values (not measured) become null.
std::string json_num(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : "null"; }

// Runs this executable again with `args`, returns its stdout (empty when it failed).
std::string run_self(const std::vector<std::string>& args, std::string* error) {
  std::vector<std::string> all = {"/proc/self/exe"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return {};
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    *error = std::string("cannot start /proc/self/exe: ") + std::strerror(rc);
    return {};
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *error = "the compile-only child process failed (run it by hand: mnist_bench --compile-only)";
    return {};
  }
  return out;
}

// `"key": number` out of a JSON line written by this program.
double json_field(const std::string& line, const std::string& key) {
  auto at = line.find("\"" + key + "\":");
  if (at == std::string::npos) return NAN;
  return std::strtod(line.c_str() + at + key.size() + 3, nullptr);
}

#ifdef NDEBUG
constexpr bool kOptimized = true;
#else
constexpr bool kOptimized = false;  // a Debug build: timings mean little
#endif

struct Args {
  std::string data = thea::data::kMnistDefaultDir;
  std::string backend;
  std::int64_t epochs = 100;
  std::int64_t batch_size = 128;
  double lr = 0.05;
  std::uint64_t seed = 42;
  std::int64_t ntrain = -1, ntest = -1;
  int threads = 0;  // 0: leave THEA_NUM_THREADS as it is
  std::string cache_dir;
  bool keep_cache = false;
  std::int64_t overhead_calls = 2000;
  int warm_processes = 3;
  std::string json;
  std::string label;
  bool quiet = false;
  bool compile_only = false;
};

thea::models::SoftmaxRegressionOptions model_options(const Args& a) {
  thea::models::SoftmaxRegressionOptions o;
  o.learning_rate = a.lr;
  o.seed = a.seed;
  o.backend = a.backend;
  return o;
}

struct Compiled {
  thea::models::SoftmaxRegression model;
  double wall_s;     // graph building + grad + both function() calls
  double compile_s;  // the two Functions' own compile_seconds()
};

Compiled build(const Args& a) {
  auto t0 = Clock::now();
  auto model = thea::models::build_softmax_regression(model_options(a));
  const double wall = seconds_since(t0);
  const double compile = model.train.compile_seconds() + model.predict.compile_seconds();
  return {std::move(model), wall, compile};
}

// Child mode: compile train + predict once on the cache the parent filled, report the time.
int run_compile_only(const Args& a) {
  Compiled c = build(a);
  fmt::print("{{\"compile_wall_s\": {}, \"compile_s\": {}}}\n", json_num(c.wall_s),
             json_num(c.compile_s));
  return 0;
}

// Mean seconds per call of f over `calls` calls, after a warm-up.
template <class F>
double per_call(std::int64_t calls, F&& f) {
  if (calls <= 0) return NAN;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(calls / 10 + 1, 100); ++i) f();
  auto t0 = Clock::now();
  for (std::int64_t i = 0; i < calls; ++i) f();
  return seconds_since(t0) / static_cast<double>(calls);
}

int run_bench(const Args& a) {
  if (a.epochs < 0) throw UsageError(fmt::format("--epochs must be >= 0, got {}", a.epochs));
  if (a.batch_size <= 0)
    throw UsageError(fmt::format("--batch-size must be >= 1, got {}", a.batch_size));
  if (a.ntrain == 0 || a.ntest == 0 || a.ntrain < -1 || a.ntest < -1)
    throw UsageError("--ntrain and --ntest must be >= 1");
  if (a.overhead_calls < 0) throw UsageError("--overhead-calls must be >= 0");

  // The cache must be chosen before the first function(): a fresh folder makes it cold.
  std::string cache_dir = a.cache_dir;
  bool temp_cache = false;
  if (cache_dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "thea-bench-cache-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
      throw thea::IoError(
          fmt::format("cannot create a temporary cache folder {}: {}", tmpl, std::strerror(errno)));
    cache_dir = tmpl;
    temp_cache = true;
  }
  const bool cache_was_empty = !fs::exists(cache_dir) || fs::is_empty(cache_dir);
  ::setenv("THEA_CACHE_DIR", cache_dir.c_str(), 1);
  struct CacheCleanup {
    std::string dir;
    bool active;
    ~CacheCleanup() {
      std::error_code ec;
      if (active) fs::remove_all(dir, ec);
    }
  } cleanup{cache_dir, temp_cache && !a.keep_cache};

  auto t_load = Clock::now();
  thea::data::Mnist d;
  try {
    d = thea::data::load_mnist(a.data, a.ntrain, a.ntest);
  } catch (const thea::Error& e) {
    std::string msg = e.what();
    if (msg.find("fetch-mnist") == std::string::npos)
      msg += "\n(run scripts/fetch-mnist to download MNIST into data/mnist, or pass --data DIR)";
    throw thea::IoError(msg);
  }
  const double load_s = seconds_since(t_load);
  const std::int64_t n = d.trX.shape()[0];
  if (a.batch_size > n)
    throw UsageError(
        fmt::format("--batch-size {} exceeds the {} training examples", a.batch_size, n));
  // The tutorial's zip(range(0, n, bs), range(bs, n, bs)): full batches only, 468 of 128.
  const std::int64_t steps = n / a.batch_size;

  if (!kOptimized)
    fmt::print(stderr,
               "warning: mnist_bench was built without NDEBUG (a Debug build); its "
               "timings are not representative\n");
  // Cold compile: the first function() of the process on an empty cache.
  Compiled cold = build(a);
  auto& model = cold.model;
  const std::string backend = model.train.backend_name();
  const std::size_t kernels_train = model.train.kernel_count();
  const std::size_t kernels_predict = model.predict.kernel_count();
  if (!a.quiet)
    fmt::print(
        "backend {}: compiled train ({} kernels) + predict ({} kernels) in {:.1f} ms cold; "
        "data loaded in {:.2f} s ({} train / {} test)\n",
        backend, kernels_train, kernels_predict, cold.wall_s * 1e3, load_s, n, d.teX.shape()[0]);

  std::vector<double> epoch_s, train_s, test_s;
  std::map<std::int64_t, double> acc_at;
  double accuracy = NAN, last_cost = NAN;
  const auto t_all = Clock::now();
  for (std::int64_t epoch = 0; epoch < a.epochs; ++epoch) {
    const auto t_epoch = Clock::now();
    double cost_sum = 0;
    for (std::int64_t b = 0; b < steps; ++b) {
      const std::int64_t start = b * a.batch_size, end = start + a.batch_size;
      cost_sum += model.train_step(d.trX.slice(0, start, end), d.trY.slice(0, start, end));
    }
    const double t_train = seconds_since(t_epoch);
    const auto t_test = Clock::now();
    accuracy = thea::models::accuracy(model.predict_labels(d.teX), d.te_labels);
    test_s.push_back(seconds_since(t_test));
    train_s.push_back(t_train);
    epoch_s.push_back(seconds_since(t_epoch));
    last_cost = steps ? cost_sum / static_cast<double>(steps) : NAN;
    if (!std::isfinite(last_cost))
      throw thea::ValueError(fmt::format("the cost became {} in epoch {}", last_cost, epoch));
    if (kTutorialAccuracy.count(epoch)) acc_at[epoch] = accuracy;
    if (!a.quiet)
      fmt::print("{:03d} {:.4f}  cost {:.5f}  {:.4f} s (train {:.4f}, test {:.4f})\n", epoch,
                 accuracy, last_cost, epoch_s.back(), t_train, test_s.back());
  }
  const double total_s = seconds_since(t_all);
  if (a.epochs > 0) acc_at[a.epochs - 1] = accuracy;

  // Warm compile in this process: the same graph again, now found in the cache.
  Compiled warm = build(a);
  // Warm compile in fresh processes on the same cache (what a user's second run pays).
  std::vector<double> warm_proc;
  std::string warm_proc_error;
  for (int i = 0; i < a.warm_processes; ++i) {
    std::vector<std::string> child = {"--compile-only", "--seed", std::to_string(a.seed), "--lr",
                                      fmt::format("{}", a.lr)};
    if (!a.backend.empty()) {
      child.push_back("--backend");
      child.push_back(a.backend);
    }
    std::string out = run_self(child, &warm_proc_error);
    double v = json_field(out, "compile_wall_s");
    if (std::isfinite(v)) warm_proc.push_back(v);
  }

  // Per-call overhead, on the warm copy so the benchmarked weights are untouched: a train
  // step on a single example, and a function whose graph is one scalar add.
  auto& probe = warm.model;
  thea::Tensor x1 = d.trX.slice(0, 0, 1), y1 = d.trY.slice(0, 0, 1);
  const double train1_s = per_call(a.overhead_calls, [&] { probe.train_step(x1, y1); });
  auto v = thea::fvector("v");
  thea::FunctionOptions trivial_opts;
  trivial_opts.backend = a.backend;
  trivial_opts.name = "trivial";
  auto trivial = thea::function({v}, {1.0 + v}, {}, trivial_opts);
  thea::Tensor v1 = thea::Tensor::from_list({1.0});
  const double trivial_s = per_call(a.overhead_calls, [&] { trivial({v1}); });
  const double batch_s = per_call(std::min<std::int64_t>(a.overhead_calls, 500), [&] {
    probe.train_step(d.trX.slice(0, 0, a.batch_size), d.trY.slice(0, 0, a.batch_size));
  });

  const std::string threads_env = env_or("THEA_NUM_THREADS", "");
  const int threads_os = os_threads();
  const double rss = peak_rss_mib();
  const double med = median(epoch_s);

  if (!a.quiet) {
    fmt::print("\n{} epochs x {} steps of {} + a {}-image test pass, backend {}\n", a.epochs, steps,
               a.batch_size, d.teX.shape()[0], backend);
    fmt::print(
        "s/epoch: median {:.4f}, mean {:.4f}, min {:.4f} (train {:.4f}, test {:.4f} median)\n", med,
        mean(epoch_s), epoch_s.empty() ? 0.0 : *std::min_element(epoch_s.begin(), epoch_s.end()),
        median(train_s), median(test_s));
    fmt::print("total {:.2f} s for {} epochs\n", total_s, a.epochs);
    for (auto [e, acc] : acc_at) {
      auto ref = kTutorialAccuracy.find(e);
      if (ref != kTutorialAccuracy.end())
        fmt::print("accuracy epoch {:03d}: {:.4f} (tutorial {:.4f}, diff {:+.4f})\n", e, acc,
                   ref->second, acc - ref->second);
      else
        fmt::print("accuracy epoch {:03d}: {:.4f}\n", e, acc);
    }
    fmt::print(
        "compile train+predict: cold {:.1f} ms, warm {:.2f} ms in-process, {} in a new "
        "process{}\n",
        cold.wall_s * 1e3, warm.wall_s * 1e3,
        warm_proc.empty() ? std::string("n/a") : fmt::format("{:.2f} ms", median(warm_proc) * 1e3),
        warm_proc.empty() && !warm_proc_error.empty() ? " (" + warm_proc_error + ")" : "");
    fmt::print(
        "per call: train on 1 example {:.1f} us, trivial graph {:.1f} us, train on {} "
        "{:.1f} us\n",
        train1_s * 1e6, trivial_s * 1e6, a.batch_size, batch_s * 1e6);
    fmt::print("peak RSS {:.1f} MiB; threads: THEA_NUM_THREADS={}, {} OS threads in process\n", rss,
               threads_env.empty() ? "(unset)" : threads_env, threads_os);
  }

  std::string acc_json;
  for (auto [e, acc] : acc_at)
    acc_json += fmt::format("{}\"{}\": {}", acc_json.empty() ? "" : ", ", e, json_num(acc));
  std::string epochs_json;
  for (double s : epoch_s) epochs_json += (epochs_json.empty() ? "" : ", ") + json_num(s);
  std::string line = fmt::format(
      "{{\"bench\": \"mnist_softmax\", \"impl\": \"thea\", \"backend\": {}, \"label\": {}, "
      "\"epochs\": {}, \"steps_per_epoch\": {}, \"batch_size\": {}, \"ntrain\": {}, "
      "\"ntest\": {}, \"s_per_epoch_median\": {}, \"s_per_epoch_mean\": {}, "
      "\"s_per_epoch_min\": {}, \"train_s_per_epoch_median\": {}, "
      "\"test_s_per_epoch_median\": {}, \"total_s\": {}, \"final_accuracy\": {}, "
      "\"final_cost\": {}, \"accuracy\": {{{}}}, \"compile_cold_s\": {}, "
      "\"compile_cold_function_s\": {}, \"compile_warm_s\": {}, \"compile_warm_process_s\": {}, "
      "\"cache_was_empty\": {}, \"kernels_train\": {}, \"kernels_predict\": {}, "
      "\"call_overhead_train1_us\": {}, \"call_overhead_trivial_us\": {}, "
      "\"call_train_batch_us\": {}, \"peak_rss_mib\": {}, \"threads_env\": {}, "
      "\"threads_os\": {}, \"hardware_threads\": {}, \"optimized_build\": {}, \"load_s\": {}, "
      "\"epoch_s\": [{}]}}",
      json_str(backend), json_str(a.label), a.epochs, steps, a.batch_size, n, d.teX.shape()[0],
      json_num(med), json_num(mean(epoch_s)),
      json_num(epoch_s.empty() ? NAN : *std::min_element(epoch_s.begin(), epoch_s.end())),
      json_num(median(train_s)), json_num(median(test_s)), json_num(total_s), json_num(accuracy),
      json_num(last_cost), acc_json, json_num(cold.wall_s), json_num(cold.compile_s),
      json_num(warm.wall_s), json_num(warm_proc.empty() ? NAN : median(warm_proc)),
      cache_was_empty ? "true" : "false", kernels_train, kernels_predict, json_num(train1_s * 1e6),
      json_num(trivial_s * 1e6), json_num(batch_s * 1e6), json_num(rss),
      threads_env.empty() ? "null" : json_str(threads_env), threads_os,
      std::thread::hardware_concurrency(), kOptimized ? "true" : "false", json_num(load_s),
      epochs_json);
  if (!a.json.empty()) {
    std::ofstream out(a.json, std::ios::trunc);
    out << line << '\n';
    if (!out) throw thea::IoError("cannot write " + a.json + ": " + std::strerror(errno));
  }
  fmt::print("{}\n", line);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Times the Theano MNIST softmax tutorial through thea: 468 steps of 128 + a 10k test pass "
      "per epoch.\nThe last stdout line is a JSON summary (bench/run-mnist reads it)."};
  Args a;
  app.add_option("--data", a.data, "MNIST folder (scripts/fetch-mnist)")->capture_default_str();
  app.add_option("--backend", a.backend, "reference, cpu, cuda (default: $THEA_BACKEND or best)");
  app.add_option("--epochs", a.epochs, "passes over the training set")->capture_default_str();
  app.add_option("--batch-size", a.batch_size, "examples per SGD step")->capture_default_str();
  app.add_option("--lr", a.lr, "SGD learning rate")->capture_default_str();
  app.add_option("--seed", a.seed, "seed of the initial weights")->capture_default_str();
  app.add_option("--ntrain", a.ntrain, "use only the first N training examples");
  app.add_option("--ntest", a.ntest, "use only the first N test examples");
  app.add_option("--threads", a.threads, "set THEA_NUM_THREADS before anything runs")
      ->check(CLI::Range(1, 256));
  app.add_option("--cache-dir", a.cache_dir,
                 "kernel cache to use (default: a fresh temporary folder, so compile is cold)");
  app.add_flag("--keep-cache", a.keep_cache, "do not delete the temporary cache at exit");
  app.add_option("--overhead-calls", a.overhead_calls, "calls timed for the per-call overhead")
      ->capture_default_str();
  app.add_option("--warm-processes", a.warm_processes,
                 "child processes timing the warm compile (0: skip)")
      ->capture_default_str();
  app.add_option("--json", a.json, "also write the JSON summary line to this file");
  app.add_option("--label", a.label, "free text copied into the JSON line");
  app.add_flag("-q,--quiet", a.quiet, "print only the JSON line");
  app.add_flag("--compile-only", a.compile_only,
               "compile train + predict once and print the time (used for the warm figure)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err);
  }
  if (a.threads > 0) ::setenv("THEA_NUM_THREADS", std::to_string(a.threads).c_str(), 1);

  try {
    return a.compile_only ? run_compile_only(a) : run_bench(a);
  } catch (const UsageError& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 2;
  } catch (const std::exception& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 1;
  }
}
