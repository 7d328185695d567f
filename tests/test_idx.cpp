// IDX reading/writing (raw and gzip, every element type, every corruption case) and the
// MNIST helpers, on small files the tests write themselves; plus checks on the real MNIST
// files when data/mnist is present (skipped with a message otherwise).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "thea/data/idx.hpp"
#include "thea/data/mnist.hpp"
#include "thea/tensor.hpp"

using namespace thea;
using namespace thea::data;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("thea_test_idx_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The IDX error for `bytes` (written to `path`) must be an IoError naming the file and `needle`.
void expect_io_error(const std::string& path, const Bytes& bytes, const std::string& needle) {
  write_bytes(path, bytes);
  CAPTURE(needle);
  CHECK_THROWS_AS(read_idx(path), IoError);
  CHECK_THROWS_WITH(read_idx(path), doctest::Contains(path.c_str()));
  CHECK_THROWS_WITH(read_idx(path), doctest::Contains(needle.c_str()));
}

}  // namespace

TEST_CASE("element types map to dtypes") {
  CHECK(idx_dtype(IdxType::UByte) == Dtype::UInt8);
  CHECK(idx_dtype(IdxType::SByte) == Dtype::Int32);
  CHECK(idx_dtype(IdxType::Short) == Dtype::Int32);
  CHECK(idx_dtype(IdxType::Int) == Dtype::Int32);
  CHECK(idx_dtype(IdxType::Float) == Dtype::Float32);
  CHECK(idx_dtype(IdxType::Double) == Dtype::Float64);
  CHECK(std::string(idx_type_name(IdxType::Short)) == "short");
}

TEST_CASE("hand-written big-endian files decode exactly") {
  TempDir dir;
  const std::string p = dir.file("h.idx");
  struct Case {
    Bytes bytes;
    Dtype dtype;
    Shape shape;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {{0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 253, 254, 255},
       Dtype::UInt8,
       {2, 3},
       {0, 1, 2, 253, 254, 255}},
      {{0, 0, 0x09, 1, 0, 0, 0, 3, 0x80, 0xFF, 0x7F}, Dtype::Int32, {3}, {-128, -1, 127}},
      {{0, 0, 0x0B, 1, 0, 0, 0, 3, 0xFF, 0xFE, 0x01, 0x02, 0x80, 0x00},
       Dtype::Int32,
       {3},
       {-2, 258, -32768}},
      {{0, 0, 0x0C, 1, 0, 0, 0, 2, 0x80, 0, 0, 0, 0x01, 0x02, 0x03, 0x04},
       Dtype::Int32,
       {2},
       {-2147483648.0, 16909060}},
      {{0, 0, 0x0D, 1, 0, 0, 0, 2, 0x3F, 0xC0, 0, 0, 0xC2, 0x28, 0, 0},
       Dtype::Float32,
       {2},
       {1.5, -42}},
      {{0, 0, 0x0E, 3, 0,    0,    0,    1,    0,    0,    0,    1,
        0, 0, 0,    1, 0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18},
       Dtype::Float64,
       {1, 1, 1},
       {3.141592653589793}},
      // A dimension of size 0 holds no data.
      {{0, 0, 0x08, 2, 0, 0, 0, 0, 0, 0, 0, 5}, Dtype::UInt8, {0, 5}, {}},
  };
  for (const auto& c : cases) {
    CAPTURE(shape_str(c.shape));
    write_bytes(p, c.bytes);
    Tensor t = read_idx(p);
    CHECK(t.dtype() == c.dtype);
    CHECK(t.shape() == c.shape);
    CHECK(t.to_vector() == c.values);
    // parse_idx sees the same bytes in memory.
    CHECK(parse_idx(c.bytes, "mem").to_vector() == c.values);
  }
  // write_idx produces these exact bytes.
  write_idx(p, Tensor::from_list({-2, 258, -32768}, Dtype::Int32), IdxType::Short);
  CHECK(read_bytes(p) == cases[2].bytes);
  write_idx(p, Tensor::from_list({1.5, -42}, Dtype::Float32));
  CHECK(read_bytes(p) == cases[4].bytes);
}

TEST_CASE("round trip: every element type, raw and gzip") {
  TempDir dir;
  struct Case {
    IdxType type;
    Tensor values;
  };
  const std::vector<Case> cases = {
      {IdxType::UByte, Tensor::random_uniform({4, 5, 6}, 0, 256, 1, Dtype::UInt8)},
      {IdxType::SByte, Tensor::random_uniform({7, 3}, -128, 128, 2, Dtype::Int32)},
      {IdxType::Short, Tensor::random_uniform({50}, -32768, 32768, 3, Dtype::Int32)},
      {IdxType::Int, Tensor::from_list({-2147483648.0, 2147483647.0, 0, -5}, Dtype::Int32)},
      {IdxType::Float, Tensor::random_normal({3, 3}, 0, 1e6, 4, Dtype::Float32)},
      {IdxType::Double, Tensor::from_list({1e-300, -1e300, INFINITY, 0.1}, Dtype::Float64)},
  };
  for (const auto& c : cases)
    for (bool gz : {false, true}) {
      CAPTURE(idx_type_name(c.type));
      CAPTURE(gz);
      const std::string p = dir.file(std::string("t_") + idx_type_name(c.type));
      write_idx(p, c.values, c.type, gz);
      const Bytes raw = read_bytes(p);
      CHECK((raw[0] == 0x1f && raw[1] == 0x8b) == gz);
      Tensor back = read_idx(p);
      CHECK(back.dtype() == idx_dtype(c.type));
      CHECK(back.shape() == c.values.shape());
      CHECK(back.to_vector() == c.values.to_vector());
    }
  // Defaults follow the dtype; uint8 stays uint8, bool becomes ubyte.
  write_idx(dir.file("b"), Tensor::from_list({1, 0, 1}, Dtype::Bool));
  CHECK(read_idx(dir.file("b")).dtype() == Dtype::UInt8);
  write_idx(dir.file("l"), Tensor::from_list({1, 2}, Dtype::Int64), IdxType::Int);
  CHECK(read_idx(dir.file("l")).to_vector() == std::vector<double>{1, 2});
  // A non-contiguous view writes its logical order.
  auto m = Tensor::arange(6, Dtype::Int32).reshape({2, 3}).permute({1, 0});
  write_idx(dir.file("v"), m);
  CHECK(read_idx(dir.file("v")).to_vector() == std::vector<double>{0, 3, 1, 4, 2, 5});
}

TEST_CASE("gzip is detected by content, not by name, and multi-member streams work") {
  TempDir dir;
  const Tensor t = Tensor::arange(100, Dtype::UInt8).reshape({10, 10});
  write_idx(dir.file("compressed.idx"), t, std::nullopt, true);
  write_idx(dir.file("plain.gz"), t, std::nullopt, false);
  CHECK(read_idx(dir.file("compressed.idx")).to_vector() == t.to_vector());
  CHECK(read_idx(dir.file("plain.gz")).to_vector() == t.to_vector());
  // `cat a.gz b.gz` is a valid gzip file holding both parts.
  write_idx(dir.file("whole"), t);
  const Bytes whole = read_bytes(dir.file("whole"));
  const Bytes a(whole.begin(), whole.begin() + 37), b(whole.begin() + 37, whole.end());
  write_bytes(dir.file("multi"), cat(gzip_compress(a), gzip_compress(b)));
  CHECK(read_idx(dir.file("multi")).to_vector() == t.to_vector());
  CHECK(read_maybe_gzip(dir.file("multi")) == whole);
}

TEST_CASE("write_idx refuses what IDX cannot hold") {
  TempDir dir;
  const std::string p = dir.file("w");
  CHECK_THROWS_AS(write_idx(p, Tensor::from_list({256}, Dtype::Int32), IdxType::UByte), ValueError);
  CHECK_THROWS_WITH(write_idx(p, Tensor::from_list({1, -129}, Dtype::Int32), IdxType::SByte),
                    doctest::Contains("element 1"));
  CHECK_THROWS_AS(write_idx(p, Tensor::from_list({0.5}), IdxType::Int), ValueError);
  CHECK_THROWS_AS(write_idx(p, Tensor::from_list({40000}, Dtype::Int32), IdxType::Short),
                  ValueError);
  CHECK_THROWS_AS(write_idx(p, Tensor::from_list({1}, Dtype::Int64)), TypeError);
  CHECK_THROWS_AS(write_idx(p, Tensor::scalar(1)), ValueError);
  CHECK_THROWS_AS(write_idx(p, Tensor()), ValueError);
  CHECK_THROWS_AS(write_idx(dir.file("no/dir/x"), Tensor::zeros({1})), IoError);
}

TEST_CASE("corrupt, truncated and missing files raise IoError naming the file") {
  TempDir dir;
  const std::string p = dir.file("bad-idx1-ubyte");
  const Bytes good = {0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2, 3, 4};
  write_bytes(p, good);
  CHECK(read_idx(p).numel() == 4);

  // Missing file.
  CHECK_THROWS_AS(read_idx(dir.file("nope")), IoError);
  CHECK_THROWS_WITH(read_idx(dir.file("nope")), doctest::Contains("No such file or directory"));
  // Empty file and truncated headers.
  expect_io_error(p, {}, "truncated header");
  expect_io_error(p, {0, 0, 8}, "truncated header");
  expect_io_error(p, {0, 0, 0x08, 1, 0, 0}, "truncated header: rank 1 needs 8 header bytes");
  expect_io_error(p, {0, 0, 0x08, 3, 0, 0, 0, 4, 0, 0, 0, 4}, "rank 3 needs 16");
  // Bad magic, unknown element type, rank 0.
  expect_io_error(p, {0x01, 0, 0x08, 1, 0, 0, 0, 4, 1, 2, 3, 4}, "bad magic number 0x01000801");
  expect_io_error(p, {'P', 'K', 3, 4, 0, 0, 0, 4}, "not an IDX file");
  expect_io_error(p, {0, 0, 0x0A, 1, 0, 0, 0, 4, 1, 2, 3, 4}, "unknown IDX element type 0x0a");
  expect_io_error(p, {0, 0, 0x08, 0, 1, 2, 3, 4}, "rank 0");
  // Wrong rank: the header claims rank 2, so the data is read as a size and too little is left.
  expect_io_error(p, {0, 0, 0x08, 2, 0, 0, 0, 4, 1, 2, 3, 4}, "wrong rank/size");
  expect_io_error(p, {0, 0, 0x08, 2, 0, 0, 0, 1, 0, 0, 0, 4}, "need 4 data bytes but only 0");
  // Truncated data, and data longer than the header says.
  expect_io_error(p, Bytes(good.begin(), good.end() - 1), "need 4 data bytes but only 3");
  expect_io_error(p, cat(good, {9}), "need 4 data bytes but 5");
  expect_io_error(p, {0, 0, 0x0E, 1, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8}, "8 bytes each");
  // Sizes whose product overflows are reported, not allocated.
  expect_io_error(
      p, {0, 0, 0x0E, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1},
      "truncated");

  // gzip problems: cut short, damaged, trailing garbage, a bare gzip magic.
  const Bytes gz = gzip_compress(cat({0, 0, 0x08, 1, 0, 0, 0, 200}, Bytes(200, 7)));
  write_bytes(p, gz);
  CHECK(read_idx(p).numel() == 200);
  expect_io_error(p, Bytes(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2)),
                  "truncated gzip");
  expect_io_error(p, Bytes(gz.begin(), gz.end() - 4), "truncated gzip");
  Bytes damaged = gz;
  damaged[damaged.size() - 6] ^= 0xFF;  // inside the CRC-32 trailer
  expect_io_error(p, damaged, "corrupt gzip");
  Bytes damaged2 = gz;
  damaged2[12] ^= 0x55;  // inside the deflate stream
  expect_io_error(p, damaged2, "corrupt gzip");
  expect_io_error(p, cat(gz, {'x', 'y', 'z'}), "trailing garbage");
  expect_io_error(p, {0x1f, 0x8b}, "truncated gzip");
  expect_io_error(p, {0x1f, 0x8b, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 1, 2, 3}, "corrupt gzip");
  // A well-formed gzip file whose content is a truncated IDX file.
  expect_io_error(p, gzip_compress({0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2}), "need 9 data bytes");
}

// ---------------------------------------------------------------- MNIST helpers

namespace {
// A tiny MNIST directory: ntrain/ntest random images and labels, raw and/or gzip.
struct FakeMnist {
  Tensor tr_img, te_img, tr_lab, te_lab;
  FakeMnist(std::int64_t ntrain, std::int64_t ntest)
      : tr_img(Tensor::random_uniform({ntrain, 28, 28}, 0, 256, 1, Dtype::UInt8)),
        te_img(Tensor::random_uniform({ntest, 28, 28}, 0, 256, 2, Dtype::UInt8)),
        tr_lab(Tensor::random_uniform({ntrain}, 0, 10, 3, Dtype::UInt8)),
        te_lab(Tensor::random_uniform({ntest}, 0, 10, 4, Dtype::UInt8)) {}
  void write(const fs::path& dir, bool gz) const {
    const std::string ext = gz ? ".gz" : "";
    write_idx((dir / (std::string(kMnistTrainImages) + ext)).string(), tr_img, std::nullopt, gz);
    write_idx((dir / (std::string(kMnistTestImages) + ext)).string(), te_img, std::nullopt, gz);
    write_idx((dir / (std::string(kMnistTrainLabels) + ext)).string(), tr_lab, std::nullopt, gz);
    write_idx((dir / (std::string(kMnistTestLabels) + ext)).string(), te_lab, std::nullopt, gz);
  }
};
}  // namespace

TEST_CASE("mnist_images, mnist_labels, one_hot") {
  auto raw = Tensor::zeros({2, 28, 28}, Dtype::UInt8);
  raw.set({0, 0, 0}, 255);
  raw.set({1, 27, 27}, 128);
  raw.set({1, 0, 1}, 1);
  Tensor x = mnist_images(raw);
  CHECK(x.dtype() == Dtype::Float32);
  CHECK(x.shape() == Shape{2, 784});
  CHECK(x.at<float>({0, 0}) == 1.0f);
  CHECK(x.at<float>({1, 783}) == static_cast<float>(128 / 255.0));
  CHECK(x.at<float>({1, 1}) == static_cast<float>(1 / 255.0));
  CHECK(x.at<float>({0, 1}) == 0.0f);
  CHECK_THROWS_AS(mnist_images(Tensor::zeros({2, 784}, Dtype::UInt8)), ShapeError);
  CHECK_THROWS_AS(mnist_images(Tensor::zeros({2, 28, 28})), TypeError);

  Tensor l = mnist_labels(Tensor::from_list({3, 0, 9}, Dtype::UInt8));
  CHECK(l.dtype() == Dtype::Int64);
  CHECK(l.to_vector() == std::vector<double>{3, 0, 9});
  CHECK_THROWS_AS(mnist_labels(Tensor::from_list({3, 10}, Dtype::UInt8)), ValueError);
  CHECK_THROWS_WITH(mnist_labels(Tensor::from_list({3, 10}, Dtype::UInt8)),
                    doctest::Contains("label 10 at index 1"));
  CHECK_THROWS_AS(mnist_labels(Tensor::zeros({2, 1}, Dtype::UInt8)), ShapeError);

  Tensor oh = one_hot(l);
  CHECK(oh.dtype() == Dtype::Float32);
  CHECK(oh.shape() == Shape{3, 10});
  std::vector<double> expect(30, 0.0);
  expect[3] = expect[10] = expect[29] = 1;
  CHECK(oh.to_vector() == expect);
  CHECK(one_hot(Tensor::from_list({1}, Dtype::Int32), 2, Dtype::Float64).to_vector() ==
        std::vector<double>{0, 1});
  CHECK_THROWS_AS(one_hot(l, 5), ValueError);
  CHECK_THROWS_AS(one_hot(Tensor::from_list({-1}, Dtype::Int32)), ValueError);
  CHECK_THROWS_AS(one_hot(Tensor::from_list({1.0})), TypeError);
}

TEST_CASE("load_mnist on a small directory: raw, gzip, raw preferred") {
  TempDir dir;
  FakeMnist fake(20, 7);
  fake.write(dir.path, /*gz=*/true);
  Mnist m = load_mnist(dir.path.string());
  CHECK(m.trX.shape() == Shape{20, 784});
  CHECK(m.teX.shape() == Shape{7, 784});
  CHECK(m.trY.shape() == Shape{20, 10});
  CHECK(m.teY.shape() == Shape{7, 10});
  CHECK(m.trY.dtype() == Dtype::Float32);
  CHECK(m.tr_labels.dtype() == Dtype::Int64);
  CHECK(m.tr_labels.to_vector() == fake.tr_lab.to_vector());
  CHECK(m.te_labels.to_vector() == fake.te_lab.to_vector());
  CHECK(m.trX.to_vector() == mnist_images(fake.tr_img).to_vector());
  for (std::int64_t i = 0; i < 7; ++i)
    CHECK(m.teY.get({i, m.te_labels.at<std::int64_t>({i})}) == 1.0);
  CHECK(mnist_file(dir.path.string(), kMnistTrainLabels) ==
        (dir.path / "train-labels-idx1-ubyte.gz").string());

  // With both present the raw file wins.
  FakeMnist other(20, 7);
  other.tr_lab = Tensor::full({20}, 4, Dtype::UInt8);
  other.write(dir.path, /*gz=*/false);
  CHECK(mnist_file(dir.path.string(), kMnistTrainLabels) ==
        (dir.path / "train-labels-idx1-ubyte").string());
  CHECK(load_mnist(dir.path.string()).tr_labels.to_vector() == std::vector<double>(20, 4));

  // ntrain / ntest keep the first examples.
  Mnist small = load_mnist(dir.path.string(), 5, 3);
  CHECK(small.trX.shape() == Shape{5, 784});
  CHECK(small.teY.shape() == Shape{3, 10});
  CHECK(small.trX.to_vector() == mnist_images(other.tr_img.slice(0, 0, 5)).to_vector());
  CHECK_THROWS_AS(load_mnist(dir.path.string(), 21, 3), ValueError);
  CHECK_THROWS_AS(load_mnist(dir.path.string(), 5, -2), ValueError);
}

TEST_CASE("load_mnist errors say what is wrong and how to fetch the data") {
  TempDir dir;
  const std::string missing = (dir.path / "nowhere").string();
  CHECK_THROWS_AS(load_mnist(missing), IoError);
  CHECK_THROWS_WITH(load_mnist(missing), doctest::Contains("scripts/fetch-mnist"));
  CHECK_THROWS_WITH(load_mnist(missing), doctest::Contains(missing.c_str()));

  FakeMnist fake(4, 3);
  fake.write(dir.path, false);
  fs::remove(dir.path / kMnistTestLabels);
  CHECK_THROWS_WITH(load_mnist(dir.path.string()),
                    doctest::Contains("t10k-labels-idx1-ubyte' (or 't10k-labels-idx1-ubyte.gz')"));
  CHECK_THROWS_WITH(load_mnist(dir.path.string()), doctest::Contains("scripts/fetch-mnist"));

  // Labels that disagree in count with the images.
  write_idx((dir.path / kMnistTestLabels).string(), Tensor::zeros({2}, Dtype::UInt8));
  CHECK_THROWS_AS(load_mnist(dir.path.string()), IoError);
  CHECK_THROWS_WITH(load_mnist(dir.path.string()), doctest::Contains("3 images"));
  // Images of the wrong rank.
  write_idx((dir.path / kMnistTestLabels).string(), Tensor::zeros({3}, Dtype::UInt8));
  write_idx((dir.path / kMnistTestImages).string(), Tensor::zeros({3, 784}, Dtype::UInt8));
  CHECK_THROWS_AS(load_mnist(dir.path.string()), IoError);
  CHECK_THROWS_WITH(load_mnist(dir.path.string()), doctest::Contains("(N, 28, 28)"));
  // Pixels of the wrong element type.
  write_idx((dir.path / kMnistTestImages).string(), Tensor::zeros({3, 28, 28}));
  CHECK_THROWS_WITH(load_mnist(dir.path.string()), doctest::Contains("uint8"));
  // A label that is not a digit.
  write_idx((dir.path / kMnistTestImages).string(), Tensor::zeros({3, 28, 28}, Dtype::UInt8));
  write_idx((dir.path / kMnistTestLabels).string(), Tensor::from_list({1, 2, 11}, Dtype::UInt8));
  CHECK_THROWS_WITH(load_mnist(dir.path.string()), doctest::Contains("label 11"));
  // A truncated file.
  write_idx((dir.path / kMnistTestLabels).string(), Tensor::from_list({1, 2, 3}, Dtype::UInt8));
  CHECK_NOTHROW(load_mnist(dir.path.string()));
  const std::string img = (dir.path / kMnistTrainImages).string();
  Bytes b = read_bytes(img);
  b.resize(b.size() - 100);
  write_bytes(img, b);
  CHECK_THROWS_AS(load_mnist(dir.path.string()), IoError);
  CHECK_THROWS_WITH(load_mnist(dir.path.string()), doctest::Contains("truncated"));
}

TEST_CASE("the real MNIST files (skipped when data/mnist is absent)") {
  const fs::path dir = fs::path(THEA_SOURCE_DIR) / "data" / "mnist";
  std::error_code ec;
  if (!fs::exists(dir / kMnistTrainImages, ec) &&
      !fs::exists(dir / "train-images-idx3-ubyte.gz", ec)) {
    MESSAGE("skipping: no MNIST in " << dir.string() << " (run scripts/fetch-mnist)");
    return;
  }
  Mnist m = load_mnist(dir.string());
  CHECK(m.trX.shape() == Shape{60000, 784});
  CHECK(m.teX.shape() == Shape{10000, 784});
  CHECK(m.trY.shape() == Shape{60000, 10});
  // Well-known facts about MNIST: first labels and per-class counts.
  CHECK(m.tr_labels.at<std::int64_t>({0}) == 5);
  CHECK(m.te_labels.at<std::int64_t>({0}) == 7);
  const std::vector<int> train_counts = {5923, 6742, 5958, 6131, 5842,
                                         5421, 5918, 6265, 5851, 5949};
  const std::vector<int> test_counts = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
  std::vector<int> tr(10, 0), te(10, 0);
  for (double v : m.tr_labels.to_vector()) tr[static_cast<int>(v)]++;
  for (double v : m.te_labels.to_vector()) te[static_cast<int>(v)]++;
  CHECK(tr == train_counts);
  CHECK(te == test_counts);
  double lo = 1, hi = 0;
  for (double v : m.teX.to_vector()) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  CHECK(lo == 0.0);
  CHECK(hi == 1.0);
  // The .gz copies, when present, decode to the same arrays.
  for (const char* name : {kMnistTestImages, kMnistTrainLabels}) {
    const fs::path raw = dir / name, gz = dir / (std::string(name) + ".gz");
    if (fs::exists(raw, ec) && fs::exists(gz, ec))
      CHECK(read_idx(raw.string()).to_vector() == read_idx(gz.string()).to_vector());
  }
}
