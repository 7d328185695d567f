#include "thea/data/mnist.hpp"

#include <array>
#include <filesystem>

#include "thea/data/idx.hpp"

namespace thea::data {
namespace {

namespace fs = std::filesystem;

std::string fetch_hint(const std::string& dir) {
  return "fetch MNIST with `scripts/fetch-mnist" +
         (dir == kMnistDefaultDir ? std::string() : " " + dir) +
         "` (it downloads or unpacks the four IDX files into " + dir + ")";
}

}  // namespace

Tensor mnist_images(const Tensor& raw) {
  if (raw.dtype() != Dtype::UInt8)
    throw TypeError("mnist_images: expected uint8 pixels, got " + raw.describe());
  if (raw.ndim() != 3 || raw.size(1) != kMnistRows || raw.size(2) != kMnistCols)
    throw ShapeError("mnist_images: expected images of shape (N, 28, 28), got " + raw.describe());
  // One table lookup per pixel; the table holds exactly float32(double(x) / 255).
  std::array<float, 256> scale;
  for (int i = 0; i < 256; ++i) scale[i] = static_cast<float>(i / 255.0);
  const Tensor src = raw.contiguous();
  const std::int64_t n = raw.size(0);
  Tensor out = Tensor::empty({n, kMnistPixels}, Dtype::Float32);
  const std::uint8_t* p = src.data<std::uint8_t>();
  float* o = out.data<float>();
  for (std::int64_t i = 0, total = n * kMnistPixels; i < total; ++i) o[i] = scale[p[i]];
  return out;
}

Tensor mnist_labels(const Tensor& raw) {
  if (raw.dtype() != Dtype::UInt8)
    throw TypeError("mnist_labels: expected uint8 labels, got " + raw.describe());
  if (raw.ndim() != 1)
    throw ShapeError("mnist_labels: expected labels of shape (N,), got " + raw.describe());
  const Tensor src = raw.contiguous();
  Tensor out = Tensor::empty(raw.shape(), Dtype::Int64);
  const std::uint8_t* p = src.data<std::uint8_t>();
  auto* o = out.data<std::int64_t>();
  for (std::int64_t i = 0; i < raw.numel(); ++i) {
    if (p[i] >= kMnistClasses)
      throw ValueError("mnist_labels: label " + std::to_string(p[i]) + " at index " +
                       std::to_string(i) + " is not a digit 0-9");
    o[i] = p[i];
  }
  return out;
}

Tensor one_hot(const Tensor& labels, std::int64_t num_classes, Dtype dtype) {
  if (!is_integer(labels.dtype()))
    throw TypeError("one_hot: labels must be integers, got " + labels.describe());
  if (labels.ndim() != 1)
    throw ShapeError("one_hot: labels must have shape (N,), got " + labels.describe());
  if (num_classes <= 0)
    throw ValueError("one_hot: num_classes must be positive, got " + std::to_string(num_classes));
  const std::int64_t n = labels.size(0);
  Tensor out = Tensor::zeros({n, num_classes}, dtype);
  const std::vector<double> v = labels.to_vector();
  for (std::int64_t i = 0; i < n; ++i) {
    const double c = v[static_cast<std::size_t>(i)];
    if (c < 0 || c >= static_cast<double>(num_classes))
      throw ValueError("one_hot: label " + std::to_string(static_cast<std::int64_t>(c)) +
                       " at index " + std::to_string(i) + " is outside [0, " +
                       std::to_string(num_classes) + ")");
    out.set({i, static_cast<std::int64_t>(c)}, 1.0);
  }
  return out;
}

Tensor load_mnist_images(const std::string& path) {
  Tensor raw = read_idx(path);
  try {
    return mnist_images(raw);
  } catch (const Error& e) {
    throw IoError("'" + path + "' does not hold MNIST images: " + e.what());
  }
}

Tensor load_mnist_labels(const std::string& path) {
  Tensor raw = read_idx(path);
  try {
    return mnist_labels(raw);
  } catch (const Error& e) {
    throw IoError("'" + path + "' does not hold MNIST labels: " + e.what());
  }
}

std::string mnist_file(const std::string& dir, const std::string& name) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw IoError("MNIST data directory '" + dir + "' does not exist; " + fetch_hint(dir));
  const fs::path raw = fs::path(dir) / name;
  if (fs::is_regular_file(raw, ec)) return raw.string();
  const fs::path gz = fs::path(dir) / (name + ".gz");
  if (fs::is_regular_file(gz, ec)) return gz.string();
  throw IoError("MNIST file '" + name + "' (or '" + name + ".gz') is missing from '" + dir + "'; " +
                fetch_hint(dir));
}

Mnist load_mnist(const std::string& dir, std::int64_t ntrain, std::int64_t ntest) {
  // Resolve all four paths first so a missing file is reported before any slow read.
  const std::string tr_img = mnist_file(dir, kMnistTrainImages);
  const std::string tr_lab = mnist_file(dir, kMnistTrainLabels);
  const std::string te_img = mnist_file(dir, kMnistTestImages);
  const std::string te_lab = mnist_file(dir, kMnistTestLabels);
  Tensor trX = load_mnist_images(tr_img), teX = load_mnist_images(te_img);
  Tensor trL = load_mnist_labels(tr_lab), teL = load_mnist_labels(te_lab);
  if (trX.size(0) != trL.size(0))
    throw IoError("MNIST files disagree: '" + tr_img + "' holds " + std::to_string(trX.size(0)) +
                  " images but '" + tr_lab + "' holds " + std::to_string(trL.size(0)) + " labels");
  if (teX.size(0) != teL.size(0))
    throw IoError("MNIST files disagree: '" + te_img + "' holds " + std::to_string(teX.size(0)) +
                  " images but '" + te_lab + "' holds " + std::to_string(teL.size(0)) + " labels");
  if (ntrain == -1) ntrain = trX.size(0);
  if (ntest == -1) ntest = teX.size(0);
  if (ntrain < 0 || ntrain > trX.size(0))
    throw ValueError("load_mnist: ntrain = " + std::to_string(ntrain) + " but '" + dir +
                     "' holds " + std::to_string(trX.size(0)) + " training examples");
  if (ntest < 0 || ntest > teX.size(0))
    throw ValueError("load_mnist: ntest = " + std::to_string(ntest) + " but '" + dir + "' holds " +
                     std::to_string(teX.size(0)) + " test examples");
  Mnist m;
  // Views of the first examples, like the tutorial's trX[:ntrain]; contiguous, so no copy.
  m.trX = trX.slice(0, 0, ntrain);
  m.teX = teX.slice(0, 0, ntest);
  m.tr_labels = trL.slice(0, 0, ntrain);
  m.te_labels = teL.slice(0, 0, ntest);
  m.trY = one_hot(m.tr_labels);
  m.teY = one_hot(m.te_labels);
  return m;
}

}  // namespace thea::data
