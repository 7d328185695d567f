// MNIST as the Theano tutorial's load.py returns it: images float32 in [0, 1] of shape
// (N, 784), labels as int64 and as one-hot float32 (N, 10). Files are read with read_idx,
// raw or gzip-compressed.
#pragma once

#include <cstdint>
#include <string>

#include "thea/tensor.hpp"

namespace thea::data {

constexpr std::int64_t kMnistRows = 28;
constexpr std::int64_t kMnistCols = 28;
constexpr std::int64_t kMnistPixels = kMnistRows * kMnistCols;
constexpr std::int64_t kMnistClasses = 10;
constexpr const char* kMnistDefaultDir = "data/mnist";

// The four original file names (without .gz).
constexpr const char* kMnistTrainImages = "train-images-idx3-ubyte";
constexpr const char* kMnistTrainLabels = "train-labels-idx1-ubyte";
constexpr const char* kMnistTestImages = "t10k-images-idx3-ubyte";
constexpr const char* kMnistTestLabels = "t10k-labels-idx1-ubyte";

// uint8 images (N, 28, 28) -> float32 (N, 784) holding x / 255 (rounded as numpy's
// (x.astype(float) / 255.).astype(float32) does). Throws TypeError/ShapeError otherwise.
Tensor mnist_images(const Tensor& raw);
// uint8 labels (N,) with values 0..9 -> int64 (N,). Throws TypeError/ShapeError/ValueError.
Tensor mnist_labels(const Tensor& raw);
// Integer labels (N,) -> one-hot (N, num_classes); ValueError for a label out of range.
Tensor one_hot(const Tensor& labels, std::int64_t num_classes = kMnistClasses,
               Dtype dtype = Dtype::Float32);

// read_idx + the conversions above; any problem is an IoError naming the file.
Tensor load_mnist_images(const std::string& path);
Tensor load_mnist_labels(const std::string& path);

// Where `name` lives in `dir`: the raw file when present, else name + ".gz". Throws IoError
// that says how to fetch the data (scripts/fetch-mnist) when the directory or file is missing.
std::string mnist_file(const std::string& dir, const std::string& name);

// The tutorial's mnist(ntrain, ntest, onehot=True) plus the integer labels.
struct Mnist {
  Tensor trX, teX;              // float32 (ntrain, 784), (ntest, 784) in [0, 1]
  Tensor trY, teY;              // float32 one-hot (ntrain, 10), (ntest, 10)
  Tensor tr_labels, te_labels;  // int64 (ntrain,), (ntest,)
};
// Loads the dataset from `dir`; ntrain/ntest keep the first examples (-1: all the files hold,
// which is the tutorial's 60000/10000; ValueError for other negatives or more than there are).
Mnist load_mnist(const std::string& dir = kMnistDefaultDir, std::int64_t ntrain = -1,
                 std::int64_t ntest = -1);

}  // namespace thea::data
