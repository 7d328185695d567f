// mnist_softmax: the Theano MNIST softmax-regression tutorial as a command-line tool.
//   mnist_softmax                         # 100 epochs, prints "000 0.8862" per epoch
//   mnist_softmax --epochs 5 --save w.npy
//   mnist_softmax --backend cuda          # the dataset resident on the GPU (--resident)
//   mnist_softmax evaluate --load w.npy   # accuracy, confusion matrix, misclassified digits
// Exit status: 0 success, 1 runtime error (data, files, backend), 2 usage error.
#include <fmt/core.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "thea/data/mnist.hpp"
#include "thea/models/softmax_regression.hpp"
#include "thea/thea.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kClasses = 10;
constexpr std::int64_t kSide = 28;  // MNIST images are 28x28

// A flag value that makes no sense: reported like a CLI11 parse error (exit 2).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------- data

struct Dataset {
  thea::Tensor train_x;      // float32 (N, 784) in [0, 1]
  thea::Tensor train_y;      // float32 (N, 10) one-hot
  thea::Tensor test_x;       // float32 (M, 784)
  thea::Tensor test_labels;  // integer (M)
};

// Images and labels of one split must describe the same examples.
void check_pair(const thea::Tensor& images, const thea::Tensor& labels, const std::string& dir,
                const char* split) {
  if (images.shape()[0] != labels.shape()[0])
    throw thea::IoError(fmt::format("{}: the {} images hold {} examples but the labels {}", dir,
                                    split, images.shape()[0], labels.shape()[0]));
}

constexpr const char* kFetchHint = "run scripts/fetch-mnist to download MNIST into data/mnist";

Dataset load_data(const std::string& dir, std::int64_t ntrain, std::int64_t ntest,
                  bool need_train) {
  if (!fs::is_directory(dir))
    throw thea::IoError("MNIST data directory '" + dir + "' not found: " + kFetchHint +
                        " (or pass --data DIR)");
  try {
    Dataset d;
    // Mirrors the tutorial's mnist(ntrain, ntest, onehot=True), truncated to the limits.
    auto limit = [](const thea::Tensor& t, std::int64_t n) {
      return n >= 0 && n < t.shape()[0] ? t.slice(0, 0, n) : t;
    };
    namespace td = thea::data;
    if (need_train) {
      auto images = td::load_mnist_images(td::mnist_file(dir, td::kMnistTrainImages));
      auto labels = td::load_mnist_labels(td::mnist_file(dir, td::kMnistTrainLabels));
      check_pair(images, labels, dir, "training");
      d.train_x = limit(images, ntrain).contiguous();
      d.train_y = td::one_hot(limit(labels, ntrain));
    }
    auto images = td::load_mnist_images(td::mnist_file(dir, td::kMnistTestImages));
    auto labels = td::load_mnist_labels(td::mnist_file(dir, td::kMnistTestLabels));
    check_pair(images, labels, dir, "test");
    d.test_x = limit(images, ntest).contiguous();
    d.test_labels = limit(labels, ntest).contiguous();
    return d;
  } catch (const thea::Error& e) {
    std::string msg = e.what();
    if (msg.find("fetch-mnist") == std::string::npos) msg += std::string("\n(") + kFetchHint + ")";
    throw thea::IoError(msg);
  }
}

// ---------------------------------------------------------------- output helpers

// A one-line bar on stderr, redrawn at most ~10 times a second; only on a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void start(std::int64_t epoch, std::int64_t total) {
    epoch_ = epoch;
    total_ = total;
    t0_ = Clock::now();
    last_ = t0_ - std::chrono::seconds(1);
  }
  void update(std::int64_t done, std::int64_t examples) {
    if (!enabled_) return;
    auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    double secs = std::chrono::duration<double>(now - t0_).count();
    double rate = secs > 0 ? examples / secs : 0;
    fmt::print(stderr, "\r\033[Kepoch {:03d} [{}{}] {}/{} batches  {:.0f} examples/s", epoch_,
               std::string(filled, '='), std::string(width - filled, ' '), done, total_, rate);
    std::fflush(stderr);
  }
  void clear() {
    if (!enabled_) return;
    fmt::print(stderr, "\r\033[K");
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  std::int64_t epoch_ = 0, total_ = 0;
  Clock::time_point t0_, last_;
};

// Epoch, mean cost, test accuracy and seconds: CSV, or JSON lines for *.jsonl / *.json.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path) : path_(path) {
    if (path.empty()) return;
    auto ext = fs::path(path).extension().string();
    json_ = ext == ".jsonl" || ext == ".json";
    out_.open(path, std::ios::out | std::ios::trunc);
    if (!out_)
      throw thea::IoError("cannot write metrics file '" + path + "': " + std::strerror(errno));
    if (!json_) out_ << "epoch,cost,accuracy,seconds\n" << std::flush;
  }
  void write(std::int64_t epoch, double cost, double accuracy, double seconds) {
    if (!out_.is_open()) return;
    if (json_)
      out_ << fmt::format(R"({{"epoch": {}, "cost": {}, "accuracy": {}, "seconds": {:.6f}}})",
                          epoch, cost, accuracy, seconds)
           << '\n';
    else
      out_ << fmt::format("{},{},{},{:.6f}", epoch, cost, accuracy, seconds) << '\n';
    out_.flush();  // readable while training runs (tail -f)
    if (!out_) throw thea::IoError("writing metrics file '" + path_ + "' failed");
  }

 private:
  std::string path_;
  bool json_ = false;
  std::ofstream out_;
};

void print_confusion(const thea::Tensor& counts) {
  fmt::print("confusion matrix (rows: true digit, columns: predicted):\n     ");
  for (std::int64_t p = 0; p < kClasses; ++p) fmt::print("{:>6}", p);
  fmt::print("   recall\n");
  for (std::int64_t t = 0; t < kClasses; ++t) {
    fmt::print("{:>5}", t);
    std::int64_t row = 0;
    for (std::int64_t p = 0; p < kClasses; ++p) {
      auto c = counts.at<std::int64_t>({t, p});
      row += c;
      fmt::print("{:>6}", c);
    }
    double recall = row ? static_cast<double>(counts.at<std::int64_t>({t, t})) / row : 0.0;
    fmt::print("   {:.4f}\n", recall);
  }
}

// One 28x28 image as text, denser characters for darker ink, two columns per pixel;
// blank rows above and below the digit are left out.
void print_digit(const thea::Tensor& image) {
  static const char kRamp[] = " .:-=+*#%@";
  const int levels = static_cast<int>(sizeof(kRamp) - 2);
  std::vector<std::string> rows;
  for (std::int64_t r = 0; r < kSide; ++r) {
    std::string line = "    |";
    for (std::int64_t c = 0; c < kSide; ++c) {
      double v = std::clamp(image.at<double>({r * kSide + c}), 0.0, 1.0);
      char ch = kRamp[static_cast<int>(std::lround(v * levels))];
      line += ch;
      line += ch;
    }
    rows.push_back(line + "|");
  }
  auto blank = [](const std::string& row) {
    return row.find_first_not_of(" |") == std::string::npos;
  };
  std::size_t first = 0, last = rows.size();
  while (first < last && blank(rows[first])) ++first;
  while (last > first && blank(rows[last - 1])) --last;
  for (std::size_t r = first; r < last; ++r) fmt::print("{}\n", rows[r]);
}

thea::Tensor load_weights(const std::string& path) {
  if (!fs::exists(path)) throw thea::IoError("weights file '" + path + "' does not exist");
  thea::Tensor w;
  try {
    w = thea::Tensor::load_npy(path);
  } catch (const thea::Error& e) {
    throw thea::IoError("cannot load weights from '" + path + "': " + e.what());
  }
  if (w.ndim() != 2 || w.shape()[0] != kSide * kSide || w.shape()[1] != kClasses)
    throw thea::ShapeError("weights in '" + path + "' have shape " + thea::shape_str(w.shape()) +
                           " (" + thea::dtype_name(w.dtype()) + "); the model needs (784, 10)");
  if (!thea::is_float(w.dtype()))
    throw thea::TypeError("weights in '" + path + "' are " + thea::dtype_name(w.dtype()) +
                          "; the model needs float32 or float64");
  return w;
}

// Fails before a long run rather than after it: the file's folder must exist.
void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    throw UsageError(std::string(flag) + " " + path + ": folder '" + parent.string() +
                     "' does not exist");
  if (fs::is_directory(path)) throw UsageError(std::string(flag) + " " + path + " is a folder");
}

// Fisher-Yates with our own bounded draw, so a seed gives the same order everywhere.
std::vector<std::int64_t> permutation(std::int64_t n, std::mt19937_64& rng) {
  std::vector<std::int64_t> p(n);
  for (std::int64_t i = 0; i < n; ++i) p[i] = i;
  for (std::int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

void gather_rows(const thea::Tensor& src, const std::vector<std::int64_t>& order,
                 thea::Tensor& dst) {
  const std::int64_t cols = src.shape()[1];
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  for (std::size_t i = 0; i < order.size(); ++i)
    std::memcpy(d + i * cols, s + order[i] * cols, sizeof(float) * cols);
}

// ---------------------------------------------------------------- train

struct TrainArgs {
  std::string data = "data/mnist";
  std::int64_t epochs = 100;
  std::int64_t batch_size = 128;
  double lr = 0.05;
  std::uint64_t seed = 42;
  std::string backend;
  bool shuffle = false;
  // The dataset in shared variables, minibatches sliced by index where the data live
  // (default: on for the cuda backend, whose steps then copy nothing from the host).
  bool resident = false, no_resident = false;
  std::string save, load, metrics;
  bool quiet = false;
  std::int64_t ntrain = -1, ntest = -1;  // -1: all, as the tutorial's mnist(ntrain, ntest)
};

int run_train(const TrainArgs& a) {
  if (a.epochs < 0) throw UsageError(fmt::format("--epochs must be >= 0, got {}", a.epochs));
  if (a.batch_size <= 0)
    throw UsageError(fmt::format("--batch-size must be >= 1, got {}", a.batch_size));
  if (!(a.lr > 0) || !std::isfinite(a.lr))
    throw UsageError(fmt::format("--lr must be a positive number, got {}", a.lr));
  if (a.ntrain == 0 || a.ntest == 0 || a.ntrain < -1 || a.ntest < -1)
    throw UsageError("--ntrain and --ntest must be >= 1");
  check_writable(a.save, "--save");
  check_writable(a.metrics, "--metrics");

  thea::models::SoftmaxRegressionOptions opts;
  opts.learning_rate = a.lr;
  opts.seed = a.seed;
  opts.backend = a.backend;
  if (!a.load.empty()) opts.initial_weights = load_weights(a.load);
  const std::string backend = a.backend.empty() ? thea::default_backend_name() : a.backend;
  const bool resident = a.resident || (!a.no_resident && backend == "cuda");

  auto t_load = Clock::now();
  Dataset d = load_data(a.data, a.ntrain, a.ntest, /*need_train=*/true);
  const std::int64_t n = d.train_x.shape()[0];
  if (a.batch_size > n)
    throw UsageError(
        fmt::format("--batch-size {} is larger than the {} training examples", a.batch_size, n));
  // Minibatches of batch_size taken in order; the last partial batch is dropped (468 of 128).
  const std::int64_t batches = n / a.batch_size;
  const double load_secs = seconds_since(t_load);

  MetricsWriter metrics(a.metrics);
  auto t_compile = Clock::now();
  if (resident)
    opts.resident = thea::models::make_resident_data(d.train_x, d.train_y, d.test_x, a.batch_size);
  auto model = thea::models::build_softmax_regression(opts);
  const double compile_secs = seconds_since(t_compile);
  if (!a.quiet)
    fmt::print(stderr,
               "loaded {} training / {} test images from {} in {:.2f} s; backend {}{}, "
               "compiled in {:.1f} ms\n",
               n, d.test_x.shape()[0], a.data, load_secs, model.train.backend_name(),
               resident ? " (dataset resident)" : "", compile_secs * 1e3);

  ProgressBar bar(!a.quiet && ::isatty(STDERR_FILENO));
  std::mt19937_64 rng(a.seed);
  thea::Tensor xs = d.train_x, ys = d.train_y;
  if (a.shuffle) {
    xs = thea::Tensor::empty(d.train_x.shape(), thea::Dtype::Float32);
    ys = thea::Tensor::empty(d.train_y.shape(), thea::Dtype::Float32);
  } else if (resident) {
    xs = ys = d.train_x = d.train_y = thea::Tensor();  // the shared copies are the data now
  }

  double train_secs = 0, eval_secs = 0;
  double accuracy = 0;
  thea::Tensor predicted;
  const auto t_all = Clock::now();
  for (std::int64_t epoch = 0; epoch < a.epochs; ++epoch) {
    const auto t_epoch = Clock::now();
    if (a.shuffle) {
      auto order = permutation(n, rng);
      gather_rows(d.train_x, order, xs);
      gather_rows(d.train_y, order, ys);
      if (resident) model.set_train_data(xs, ys);  // one upload per epoch
    }
    bar.start(epoch, batches);
    double cost_sum = 0;
    // Resident: the costs are read once the epoch's steps are queued (on the cuda backend
    // the device then never waits for the host between steps), in step order.
    std::vector<thea::Tensor> costs;
    for (std::int64_t b = 0; b < batches; ++b) {
      const std::int64_t start = b * a.batch_size, end = start + a.batch_size;
      // Resident: the function slices trX[start:end] itself; else views into the host
      // dataset, no copy.
      if (resident)
        costs.push_back(model.train_batch_cost(b));
      else
        cost_sum += model.train_step(xs.slice(0, start, end), ys.slice(0, start, end));
      bar.update(b + 1, end);
    }
    for (const thea::Tensor& c : costs)
      if (c.defined()) cost_sum += c.item<float>();
    bar.clear();
    const double epoch_train = seconds_since(t_epoch);
    train_secs += epoch_train;

    const auto t_eval = Clock::now();
    predicted = resident ? model.predict_test_labels() : model.predict_labels(d.test_x);
    accuracy = thea::models::accuracy(predicted, d.test_labels);
    eval_secs += seconds_since(t_eval);

    const double mean_cost = batches ? cost_sum / static_cast<double>(batches) : 0.0;
    if (!std::isfinite(mean_cost))
      throw thea::ValueError(fmt::format("the cost became {} in epoch {}; lower --lr (now {})",
                                         mean_cost, epoch, a.lr));
    // The tutorial's line: print "{0:03d}".format(i), np.mean(...)
    fmt::print("{:03d} {}\n", epoch, accuracy);
    std::fflush(stdout);
    metrics.write(epoch, mean_cost, accuracy, seconds_since(t_epoch));
  }
  const double total_secs = seconds_since(t_all);

  if (a.epochs == 0) {
    predicted = resident ? model.predict_test_labels() : model.predict_labels(d.test_x);
    accuracy = thea::models::accuracy(predicted, d.test_labels);
  }
  if (!a.save.empty()) {
    try {
      model.weights().save_npy(a.save);
    } catch (const thea::Error& e) {
      throw thea::IoError("cannot save weights to '" + a.save + "': " + e.what());
    }
  }
  if (a.quiet) return 0;

  const std::int64_t examples = a.epochs * batches * a.batch_size;
  const std::int64_t ntest = d.test_labels.numel();
  fmt::print("\n{} epochs x {} minibatches of {} ({} examples per epoch), backend {}{}\n", a.epochs,
             batches, a.batch_size, batches * a.batch_size, model.train.backend_name(),
             resident ? ", dataset resident" : "");
  fmt::print("total time {:.2f} s, {:.3f} s per epoch (training {:.3f} s, test {:.3f} s)\n",
             total_secs, a.epochs ? total_secs / a.epochs : 0.0,
             a.epochs ? train_secs / a.epochs : 0.0, a.epochs ? eval_secs / a.epochs : 0.0);
  fmt::print("{:.0f} training examples per second\n", train_secs > 0 ? examples / train_secs : 0);
  fmt::print("final test accuracy {} ({} of {})\n", accuracy,
             std::llround(accuracy * static_cast<double>(ntest)), ntest);
  print_confusion(thea::models::confusion_matrix(predicted, d.test_labels, kClasses));
  if (!a.save.empty()) fmt::print("weights saved to {}\n", a.save);
  return 0;
}

// ---------------------------------------------------------------- evaluate

struct EvalArgs {
  std::string data = "data/mnist";
  std::string load;
  std::string backend;
  std::int64_t ntest = -1;
  std::int64_t show = 3;
};

int run_evaluate(const EvalArgs& a) {
  if (a.ntest == 0 || a.ntest < -1) throw UsageError("--ntest must be >= 1");
  if (a.show < 0) throw UsageError(fmt::format("--show must be >= 0, got {}", a.show));
  thea::models::SoftmaxRegressionOptions opts;
  opts.backend = a.backend;
  opts.initial_weights = load_weights(a.load);
  Dataset d = load_data(a.data, -1, a.ntest, /*need_train=*/false);

  auto model = thea::models::build_softmax_regression(opts);
  thea::FunctionOptions prob_opts;
  prob_opts.backend = a.backend;
  prob_opts.name = "probabilities";
  auto probabilities = thea::function({model.X}, {model.py_x}, {}, prob_opts);
  thea::Tensor predicted = model.predict_labels(d.test_x);
  const double accuracy = thea::models::accuracy(predicted, d.test_labels);
  const std::int64_t ntest = d.test_labels.numel();
  fmt::print("test accuracy {} ({} of {}), weights {}, backend {}\n", accuracy,
             std::llround(accuracy * static_cast<double>(ntest)), ntest, a.load,
             model.predict.backend_name());
  print_confusion(thea::models::confusion_matrix(predicted, d.test_labels, kClasses));

  std::int64_t shown = 0;
  for (std::int64_t i = 0; i < ntest && shown < a.show; ++i) {
    const auto truth = d.test_labels.at<std::int64_t>({i});
    const auto guess = predicted.at<std::int64_t>({i});
    if (truth == guess) continue;
    thea::Tensor image = d.test_x.slice(0, i, i + 1);
    thea::Tensor p = probabilities({image})[0];
    fmt::print("\ntest image {}: true {}, predicted {} (p={:.2f}, p(true)={:.2f})\n", i, truth,
               guess, p.at<double>({0, guess}), p.at<double>({0, truth}));
    print_digit(image.select(0, 0));
    ++shown;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Softmax regression on MNIST with thea: the Theano tutorial's model and training loop.\n"
      "Prints the test accuracy after each epoch (\"000 0.8862\"), then a summary."};
  app.set_version_flag("--version", std::string("thea mnist_softmax ") + THEA_APP_VERSION);

  TrainArgs t;
  app.add_option("--data", t.data, "MNIST folder with the four IDX files (scripts/fetch-mnist)")
      ->capture_default_str();
  app.add_option("--epochs", t.epochs, "passes over the training set")->capture_default_str();
  app.add_option("--batch-size", t.batch_size,
                 "examples per SGD step; the last partial batch "
                 "of an epoch is dropped")
      ->capture_default_str();
  app.add_option("--lr", t.lr, "SGD learning rate")->capture_default_str();
  app.add_option("--seed", t.seed, "seed of the initial weights N(0, 0.01^2) and of --shuffle")
      ->capture_default_str();
  app.add_option("--backend", t.backend, "reference, cpu, cuda (default: $THEA_BACKEND or best)");
  app.add_flag("--shuffle", t.shuffle,
               "shuffle the training set every epoch (off, as the tutorial)");
  auto* resident = app.add_flag(
      "--resident", t.resident,
      "keep the dataset in shared variables (on the GPU for cuda) and train by minibatch "
      "index, Theano's givens idiom (default for --backend cuda)");
  app.add_flag("--no-resident", t.no_resident, "feed each minibatch from host memory, also on cuda")
      ->excludes(resident);
  app.add_option("--save", t.save, "write the trained weights (784, 10) to this .npy file");
  app.add_option("--load", t.load, "start from weights in this .npy file instead of random ones");
  app.add_option("--metrics", t.metrics,
                 "per-epoch metrics file: CSV, or JSON lines when it ends in .jsonl/.json");
  app.add_flag("-q,--quiet", t.quiet, "print only the per-epoch accuracy lines");
  app.add_option("--ntrain", t.ntrain, "use only the first N training examples (default: all)");
  app.add_option("--ntest", t.ntest, "use only the first N test examples (default: all)");

  EvalArgs e;
  CLI::App* eval = app.add_subcommand(
      "evaluate", "Load saved weights: test accuracy, confusion matrix, misclassified digits");
  eval->add_option("--load", e.load, ".npy weights written by --save")->required();
  eval->add_option("--data", e.data, "MNIST folder")->capture_default_str();
  eval->add_option("--backend", e.backend, "reference, cpu, cuda");
  eval->add_option("--ntest", e.ntest, "use only the first N test examples");
  eval->add_option("--show", e.show, "misclassified digits to draw")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& err) {
    return app.exit(err);
  } catch (const CLI::CallForAllHelp& err) {
    return app.exit(err);
  } catch (const CLI::CallForVersion& err) {
    return app.exit(err);
  } catch (const CLI::ParseError& err) {
    fmt::print(stderr, "error: {}\nRun '{} --help' for the options.\n", err.what(),
               fs::path(argv[0]).filename().string());
    return 2;
  }

  try {
    return eval->parsed() ? run_evaluate(e) : run_train(t);
  } catch (const UsageError& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 2;
  } catch (const thea::Error& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 1;
  } catch (const std::exception& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 1;
  }
}
