// Drives the mnist_softmax binary as a user would: bad flags and files must give a clear
// message and a non-zero exit; training on small IDX files written here, and on a few
// hundred real MNIST images when data/mnist exists, must learn.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"
#include "thea/backend.hpp"
#include "thea/tensor.hpp"

namespace fs = std::filesystem;

#ifndef THEA_APP_PATH

TEST_CASE("mnist_softmax app") { MESSAGE("skipped: built without apps (THEA_BUILD_APPS=OFF)"); }

#else

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A scratch folder per test process (ctest may run suites in parallel), removed at exit.
struct Scratch {
  fs::path dir = fs::temp_directory_path() / ("thea_test_app_" + std::to_string(::getpid()));
  Scratch() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
const fs::path& scratch() {
  static const Scratch s;
  return s.dir;
}

Result run_app(const std::vector<std::string>& args) {
  std::string cmd = quote(THEA_APP_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  const fs::path out = scratch() / "stdout.txt", err = scratch() / "stderr.txt";
  cmd += " >" + quote(out.string()) + " 2>" + quote(err.string()) + " </dev/null";
  int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void put_be32(std::ofstream& f, std::uint32_t v) {
  const unsigned char b[4] = {static_cast<unsigned char>(v >> 24),
                              static_cast<unsigned char>(v >> 16),
                              static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
  f.write(reinterpret_cast<const char*>(b), 4);
}

// IDX files in MNIST's layout (uint8 images n x 28 x 28, uint8 labels). Digit k is a bright
// horizontal band at rows 2k+3..2k+5 over faint noise: linearly separable, so a few epochs
// of softmax regression must classify it almost perfectly.
void write_split(const fs::path& dir, const std::string& prefix, std::uint32_t n,
                 std::uint32_t seed) {
  std::ofstream img(dir / (prefix + "-images-idx3-ubyte"), std::ios::binary);
  std::ofstream lab(dir / (prefix + "-labels-idx1-ubyte"), std::ios::binary);
  put_be32(img, 0x00000803);
  put_be32(img, n);
  put_be32(img, 28);
  put_be32(img, 28);
  put_be32(lab, 0x00000801);
  put_be32(lab, n);
  std::uint32_t state = seed;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint32_t label = (i * 7 + seed) % 10;
    lab.put(static_cast<char>(label));
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) {
        state = state * 1664525u + 1013904223u;
        int v = static_cast<int>((state >> 24) % 40);
        if (r >= static_cast<int>(2 * label + 3) && r < static_cast<int>(2 * label + 6) && c > 4 &&
            c < 24)
          v = 200 + static_cast<int>((state >> 16) % 56);
        img.put(static_cast<char>(v));
      }
  }
}

const fs::path& synthetic_data() {
  static const fs::path dir = [] {
    fs::path d = scratch() / "synthetic";
    fs::create_directories(d);
    write_split(d, "train", 300, 1);
    write_split(d, "t10k", 100, 2);
    return d;
  }();
  return dir;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> lines;
  std::stringstream ss(s);
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  return lines;
}

// Rows of a metrics CSV as {epoch, cost, accuracy, seconds}.
std::vector<std::vector<double> > read_csv(const fs::path& p) {
  std::vector<std::vector<double> > rows;
  auto lines = lines_of(slurp(p));
  REQUIRE(!lines.empty());
  CHECK(lines[0] == "epoch,cost,accuracy,seconds");
  for (std::size_t i = 1; i < lines.size(); ++i) {
    std::vector<double> row;
    std::stringstream ss(lines[i]);
    for (std::string cell; std::getline(ss, cell, ',');) row.push_back(std::stod(cell));
    REQUIRE(row.size() == 4);
    rows.push_back(row);
  }
  return rows;
}

fs::path real_mnist() {
  if (const char* env = std::getenv("THEA_MNIST_DIR"); env && *env) return env;
  return fs::path(THEA_SOURCE_DIR) / "data" / "mnist";
}

bool have_real_mnist() {
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    if (!fs::exists(real_mnist() / f)) return false;
  return true;
}

}  // namespace

TEST_CASE("--help lists the flags and exits 0") {
  auto r = run_app({"--help"});
  CHECK(r.code == 0);
  for (const char* flag : {"--data", "--epochs", "--batch-size", "--lr", "--seed", "--backend",
                           "--shuffle", "--save", "--load", "--metrics", "--quiet", "evaluate"})
    CHECK_MESSAGE(contains(r.out, flag), flag);
}

TEST_CASE("unknown flags and nonsense values are usage errors (exit 2)") {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--bogus"}, "--bogus"},
      {{"--epochs", "-3"}, "--epochs must be >= 0"},
      {{"--epochs", "many"}, "--epochs"},
      {{"--batch-size", "0"}, "--batch-size must be >= 1"},
      {{"--batch-size", "-5"}, "--batch-size must be >= 1"},
      {{"--lr", "-0.1"}, "--lr must be a positive number"},
      {{"--lr", "0"}, "--lr must be a positive number"},
      {{"--save", "/nonexistent-folder/w.npy"}, "does not exist"},
      {{"evaluate"}, "--load"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args[0]);
    auto r = run_app(c.args);
    CHECK(r.code == 2);
    CHECK(contains(r.err, "error:"));
    CHECK_MESSAGE(contains(r.err, c.message), r.err);
    CHECK(r.out.empty());
  }
}

TEST_CASE("a missing data directory says how to fetch it (exit 1)") {
  auto r = run_app({"--data", (scratch() / "no-such-dir").string(), "--epochs", "1"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "error:"));
  CHECK(contains(r.err, "no-such-dir"));
  CHECK(contains(r.err, "scripts/fetch-mnist"));
}

TEST_CASE("corrupt, truncated and missing data files are clear errors (exit 1)") {
  SUBCASE("garbage") {
    fs::path d = scratch() / "garbage";
    fs::create_directories(d);
    for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
      std::ofstream(d / f, std::ios::binary) << "this is not an IDX file at all";
    auto r = run_app({"--data", d.string(), "--epochs", "1"});
    CHECK(r.code == 1);
    CHECK_MESSAGE(contains(r.err, "error:"), r.err);
    CHECK(contains(r.err, "scripts/fetch-mnist"));
  }
  SUBCASE("truncated images") {
    fs::path d = scratch() / "truncated";
    fs::create_directories(d);
    for (const auto& e : fs::directory_iterator(synthetic_data()))
      fs::copy_file(e.path(), d / e.path().filename(), fs::copy_options::overwrite_existing);
    fs::resize_file(d / "train-images-idx3-ubyte", 16 + 784 * 10 + 5);
    auto r = run_app({"--data", d.string(), "--epochs", "1"});
    CHECK(r.code == 1);
    CHECK_MESSAGE(contains(r.err, "train-images-idx3-ubyte"), r.err);
  }
  SUBCASE("a file missing") {
    fs::path d = scratch() / "incomplete";
    fs::create_directories(d);
    for (const auto& e : fs::directory_iterator(synthetic_data()))
      fs::copy_file(e.path(), d / e.path().filename(), fs::copy_options::overwrite_existing);
    fs::remove(d / "t10k-labels-idx1-ubyte");
    auto r = run_app({"--data", d.string(), "--epochs", "1"});
    CHECK(r.code == 1);
    CHECK_MESSAGE(contains(r.err, "t10k-labels"), r.err);
  }
}

TEST_CASE("weights of the wrong shape or a bad weights file are rejected (exit 1)") {
  const fs::path wrong = scratch() / "wrong_shape.npy";
  thea::Tensor::zeros({10, 784}).save_npy(wrong.string());
  for (const char* mode : {"train", "evaluate"}) {
    CAPTURE(mode);
    std::vector<std::string> args;
    if (std::string(mode) == "evaluate") args.push_back("evaluate");
    args.insert(args.end(), {"--data", synthetic_data().string(), "--load", wrong.string()});
    auto r = run_app(args);
    CHECK(r.code == 1);
    CHECK_MESSAGE(contains(r.err, "(10, 784)"), r.err);
    CHECK(contains(r.err, "(784, 10)"));
  }
  const fs::path junk = scratch() / "junk.npy";
  std::ofstream(junk) << "not numpy";
  auto r = run_app({"--data", synthetic_data().string(), "--load", junk.string()});
  CHECK(r.code == 1);
  CHECK_MESSAGE(contains(r.err, "junk.npy"), r.err);
  r = run_app({"--load", (scratch() / "absent.npy").string()});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "absent.npy"));
}

TEST_CASE("a batch larger than the training set is a usage error") {
  auto r = run_app({"--data", synthetic_data().string(), "--batch-size", "301"});
  CHECK(r.code == 2);
  CHECK_MESSAGE(contains(r.err, "larger than the 300 training examples"), r.err);
}

TEST_CASE("training on synthetic IDX data: the tutorial's output, metrics, save and evaluate") {
  const fs::path csv = scratch() / "metrics.csv", jsonl = scratch() / "metrics.jsonl";
  const fs::path weights = scratch() / "w.npy";
  auto r =
      run_app({"--data", synthetic_data().string(), "--epochs", "4", "--batch-size", "32", "--lr",
               "0.5", "--seed", "7", "--metrics", csv.string(), "--save", weights.string()});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto lines = lines_of(r.out);
  REQUIRE(lines.size() > 4);
  for (int e = 0; e < 4; ++e) CHECK(lines[e].rfind("00" + std::to_string(e) + " ", 0) == 0);
  // 300 examples in batches of 32: 9 batches, the last partial batch (12) dropped.
  CHECK_MESSAGE(contains(r.out, "9 minibatches of 32 (288 examples per epoch)"), r.out);
  CHECK(contains(r.out, "confusion matrix"));
  CHECK(contains(r.out, "final test accuracy"));
  // Not a terminal: no progress bar.
  CHECK(!contains(r.err, "examples/s"));

  auto rows = read_csv(csv);
  REQUIRE(rows.size() == 4);
  for (int e = 0; e < 4; ++e) CHECK(rows[e][0] == e);
  CHECK(rows[3][1] < rows[0][1]);  // mean cost falls
  CHECK(rows[3][2] >= 0.95);       // separable data: near perfect
  // The printed accuracy is the metrics' accuracy.
  CHECK(std::stod(lines[3].substr(4)) == doctest::Approx(rows[3][2]));

  thea::Tensor w = thea::Tensor::load_npy(weights.string());
  CHECK(w.shape() == thea::Shape{784, 10});

  auto ev = run_app(
      {"evaluate", "--data", synthetic_data().string(), "--load", weights.string(), "--show", "2"});
  REQUIRE_MESSAGE(ev.code == 0, ev.err);
  CHECK(contains(ev.out, "test accuracy " + lines[3].substr(4)));
  CHECK(contains(ev.out, "confusion matrix"));

  // JSON lines and --quiet: only the tutorial's lines on stdout.
  auto q = run_app({"--data", synthetic_data().string(), "--epochs", "2", "--batch-size", "32",
                    "--lr", "0.5", "--seed", "7", "--metrics", jsonl.string(), "--quiet"});
  REQUIRE_MESSAGE(q.code == 0, q.err);
  auto qlines = lines_of(q.out);
  REQUIRE(qlines.size() == 2);
  CHECK(qlines[0] == lines[0]);  // same seed, same run
  CHECK(qlines[1] == lines[1]);
  auto jl = lines_of(slurp(jsonl));
  REQUIRE(jl.size() == 2);
  CHECK(contains(jl[0], "\"epoch\": 0"));
  CHECK(contains(jl[1], "\"accuracy\": "));

  // Continuing from saved weights starts where training stopped.
  auto cont =
      run_app({"--data", synthetic_data().string(), "--epochs", "0", "--load", weights.string()});
  REQUIRE_MESSAGE(cont.code == 0, cont.err);
  CHECK(contains(cont.out, "final test accuracy " + lines[3].substr(4)));
}

TEST_CASE("--shuffle is reproducible for a seed and still learns") {
  std::vector<std::string> args = {"--data",       synthetic_data().string(),
                                   "--epochs",     "3",
                                   "--batch-size", "25",
                                   "--lr",         "0.5",
                                   "--shuffle",    "--quiet"};
  auto a = run_app(args);
  auto b = run_app(args);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  CHECK(a.out == b.out);
  auto lines = lines_of(a.out);
  REQUIRE(lines.size() == 3);
  CHECK(std::stod(lines[2].substr(4)) >= 0.9);
}

TEST_CASE("end-to-end on a few hundred real MNIST images") {
  if (!have_real_mnist()) {
    MESSAGE("skipped: no MNIST in " << real_mnist().string() << " (run scripts/fetch-mnist)");
    return;
  }
  const fs::path csv = scratch() / "real.csv";
  auto r =
      run_app({"--data", real_mnist().string(), "--ntrain", "800", "--ntest", "500", "--epochs",
               "8", "--batch-size", "50", "--lr", "0.2", "--metrics", csv.string()});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto rows = read_csv(csv);
  REQUIRE(rows.size() == 8);
  CHECK(rows[7][1] < rows[0][1]);
  CHECK(rows[7][1] < 0.7 * rows[0][1]);
  // Chance is 0.1; a few hundred steps of softmax regression reach well above 0.7.
  CHECK_MESSAGE(rows[7][2] > 0.7, r.out);
  // The load line goes to stderr, not stdout (stdout's throughput line can end in "800").
  CHECK(contains(r.out, "training / ") == false);
  CHECK(contains(r.err, "800 training / 500 test"));
}

TEST_CASE("--resident: the same accuracies and bit-identical weights as host minibatches") {
  for (const std::string backend : {"reference", "cpu"}) {
    CAPTURE(backend);
    if (!thea::testing::backend_available(backend)) continue;
    // Batches of 128 are what the tutorial uses (and what a row-blocked schedule splits).
    for (auto [batch, shuffle] :
         {std::pair<std::string, bool>{"32", false}, {"32", true}, {"128", false}}) {
      CAPTURE(batch);
      CAPTURE(shuffle);
      const fs::path w_in = scratch() / "w_input.npy", w_res = scratch() / "w_resident.npy";
      std::vector<std::string> args = {"--data",       synthetic_data().string(),
                                       "--backend",    backend,
                                       "--epochs",     "3",
                                       "--batch-size", batch,
                                       "--lr",         "0.5",
                                       "--seed",       "7"};
      if (shuffle) args.push_back("--shuffle");
      auto with = [&](const std::string& flag, const fs::path& w) {
        auto a = args;
        a.insert(a.end(), {flag, "--save", w.string()});
        return run_app(a);
      };
      auto in = with("--no-resident", w_in);
      auto res = with("--resident", w_res);
      REQUIRE_MESSAGE(in.code == 0, in.err);
      REQUIRE_MESSAGE(res.code == 0, res.err);
      CHECK_MESSAGE(contains(res.out, "backend " + backend + ", dataset resident"), res.out);
      CHECK(contains(res.err, "(dataset resident)"));
      CHECK(!contains(in.out, "resident"));
      // Per-epoch accuracy lines, then the summary: all but the timing lines agree.
      auto li = lines_of(in.out), lr = lines_of(res.out);
      REQUIRE(li.size() > 3);
      for (int e = 0; e < 3; ++e) CHECK(li[e] == lr[e]);
      const std::string wi = slurp(w_in), wr = slurp(w_res);
      CHECK(!wi.empty());
      CHECK(wi == wr);
    }
  }
}

TEST_CASE("--resident and --no-resident exclude each other; --help lists them") {
  auto r = run_app({"--data", synthetic_data().string(), "--resident", "--no-resident"});
  CHECK(r.code == 2);
  CHECK_MESSAGE(contains(r.err, "excludes"), r.err);
  auto h = run_app({"--help"});
  CHECK(contains(h.out, "--resident"));
  CHECK(contains(h.out, "--no-resident"));
}

TEST_CASE("--resident on a real MNIST subset matches host minibatches bit for bit") {
  if (!have_real_mnist()) {
    MESSAGE("skipped: no MNIST in " << real_mnist().string() << " (run scripts/fetch-mnist)");
    return;
  }
  const std::string backend = thea::testing::backend_available("cpu") ? "cpu" : "reference";
  const fs::path w_in = scratch() / "real_in.npy", w_res = scratch() / "real_res.npy";
  std::vector<std::string> args = {"--data",    real_mnist().string(),
                                   "--backend", backend,
                                   "--ntrain",  "3000",
                                   "--ntest",   "1000",
                                   "--epochs",  "2",
                                   "--quiet"};
  auto a = args, b = args;
  a.insert(a.end(), {"--no-resident", "--save", w_in.string()});
  b.insert(b.end(), {"--resident", "--save", w_res.string()});
  auto in = run_app(a), res = run_app(b);
  REQUIRE_MESSAGE(in.code == 0, in.err);
  REQUIRE_MESSAGE(res.code == 0, res.err);
  CHECK(lines_of(in.out).size() == 2);
  CHECK(in.out == res.out);
  CHECK(slurp(w_in) == slurp(w_res));
}

#endif
