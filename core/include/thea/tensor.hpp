// thea::Tensor: a host ndarray (dtype, shape, strides in elements, shared storage).
// Slices are views that share storage, so minibatches cost no copy.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "thea/dtype.hpp"
#include "thea/error.hpp"

namespace thea {

using Shape = std::vector<std::int64_t>;
using Strides = std::vector<std::int64_t>;

std::string shape_str(const Shape& shape);  // "(128, 784)"
std::int64_t shape_numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);

// Owns one aligned host allocation; tensors and views point into it.
class Storage {
 public:
  explicit Storage(std::size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  // The bytes, complete: contents still arriving (see set_pending) are waited for first.
  void* data() {
    if (pending_) settle();
    return data_;
  }
  const void* data() const {
    if (pending_) settle();
    return data_;
  }
  std::size_t nbytes() const { return nbytes_; }

  // Contents that arrive later: a backend returns a function's outputs before the device
  // has copied them back, so a loop that never reads a value (the tutorial's per-step cost)
  // never waits for it. `fill` writes the contents into the allocation on the first access
  // to data(), once, from whichever thread comes first. Set before the storage is shared.
  void set_pending(std::function<void(void*)> fill);
  bool settled() const;

 private:
  void settle() const;
  struct Pending;
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  std::unique_ptr<Pending> pending_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false
  // Uninitialised contiguous tensor.
  static Tensor empty(const Shape& shape, Dtype dtype = Dtype::Float32);
  static Tensor zeros(const Shape& shape, Dtype dtype = Dtype::Float32);
  static Tensor ones(const Shape& shape, Dtype dtype = Dtype::Float32);
  static Tensor full(const Shape& shape, double value, Dtype dtype = Dtype::Float32);
  static Tensor scalar(double value, Dtype dtype = Dtype::Float32);
  // 0, 1, ..., n-1
  static Tensor arange(std::int64_t n, Dtype dtype = Dtype::Int64);
  // Deterministic for a seed on every platform (own generator, not std distributions).
  static Tensor random_normal(const Shape& shape, double mean, double stddev, std::uint64_t seed,
                              Dtype dtype = Dtype::Float32);
  static Tensor random_uniform(const Shape& shape, double low, double high, std::uint64_t seed,
                               Dtype dtype = Dtype::Float32);
  // Copies `values`; shape defaults to 1-D.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, Shape shape = {});
  static Tensor from_list(std::initializer_list<double> values, Dtype dtype = Dtype::Float32);
  static Tensor from_list(std::initializer_list<std::initializer_list<double>> rows,
                          Dtype dtype = Dtype::Float32);
  // Wraps existing storage (used by backends and views).
  Tensor(std::shared_ptr<Storage> storage, std::int64_t offset, Shape shape, Strides strides,
         Dtype dtype);

  bool defined() const { return storage_ != nullptr; }
  Dtype dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }  // in elements
  int ndim() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const { return shape_numel(shape_); }
  std::int64_t size(int axis) const;  // negative axis counts from the end
  std::int64_t offset() const { return offset_; }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to element 0 of this view.
  void* raw_data();
  const void* raw_data() const;
  template <class T>
  T* data();  // throws TypeError when T does not match dtype()
  template <class T>
  const T* data() const;

  // Single element converted to T; requires numel() == 1.
  template <class T>
  T item() const;
  // Element at a full index, converted to T.
  template <class T>
  T at(const std::vector<std::int64_t>& index) const;
  double get(const std::vector<std::int64_t>& index) const { return at<double>(index); }
  void set(const std::vector<std::int64_t>& index, double value);

  // Zero-copy view of [begin, end) with step along axis (numpy clamping, negatives count from end).
  Tensor slice(int axis, std::int64_t begin, std::int64_t end, std::int64_t step = 1) const;
  // Zero-copy view selecting one index of axis (the axis disappears).
  Tensor select(int axis, std::int64_t index) const;
  // View with axes permuted.
  Tensor permute(const std::vector<int>& axes) const;
  // View when contiguous, copy otherwise; one -1 is inferred.
  Tensor reshape(const Shape& shape) const;
  Tensor contiguous() const;  // self when already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor astype(Dtype dtype) const;
  // Copy `src` (same shape, any dtype/strides) into this view.
  void copy_from(const Tensor& src);
  void fill(double value);

  // Values as doubles in row-major order (handy in tests and printing).
  std::vector<double> to_vector() const;
  std::string to_string(int max_per_dim = 6) const;
  std::string describe() const;  // "float32 (128, 784)"

  // NumPy .npy (format 1.0/2.0, little-endian, C or Fortran order on load).
  void save_npy(const std::string& path) const;
  static Tensor load_npy(const std::string& path);

 private:
  std::shared_ptr<Storage> storage_;
  std::int64_t offset_ = 0;
  Shape shape_;
  Strides strides_;
  Dtype dtype_ = Dtype::Float32;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// True when shapes match and |a-b| <= atol + rtol*|b| elementwise (any dtypes).
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
double max_abs_diff(const Tensor& a, const Tensor& b);

// Free-function spellings used in model code: shared(random_normal(...)).
Tensor random_normal(const Shape& shape, double mean, double stddev, std::uint64_t seed,
                     Dtype dtype = Dtype::Float32);
Tensor random_uniform(const Shape& shape, double low, double high, std::uint64_t seed,
                      Dtype dtype = Dtype::Float32);

// ---- template definitions ----
template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, Shape shape) {
  if (shape.empty() && values.size() != 1) shape = {static_cast<std::int64_t>(values.size())};
  if (shape_numel(shape) != static_cast<std::int64_t>(values.size()))
    throw ShapeError("Tensor::from_vector: " + std::to_string(values.size()) +
                     " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>);
  T* out = t.data<T>();
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return t;
}

template <class T>
T* Tensor::data() {
  if (dtype_of<T> != dtype_)
    throw TypeError(std::string("Tensor::data: requested ") + dtype_name(dtype_of<T>) + " from a " +
                    dtype_name(dtype_) + " tensor");
  return static_cast<T*>(raw_data());
}
template <class T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}

template <class T>
T Tensor::at(const std::vector<std::int64_t>& index) const {
  if (static_cast<int>(index.size()) != ndim())
    throw ValueError("Tensor::at: index of rank " + std::to_string(index.size()) +
                     " for a tensor of shape " + shape_str(shape_));
  std::int64_t off = 0;
  for (int i = 0; i < ndim(); ++i) {
    if (index[i] < 0 || index[i] >= shape_[i])
      throw ValueError("Tensor::at: index " + std::to_string(index[i]) + " out of range for axis " +
                       std::to_string(i) + " of shape " + shape_str(shape_));
    off += index[i] * strides_[i];
  }
  return visit_dtype(dtype_, [&](auto tag) -> T {
    using S = decltype(tag);
    return static_cast<T>(static_cast<const S*>(raw_data())[off]);
  });
}

template <class T>
T Tensor::item() const {
  if (numel() != 1)
    throw ValueError("Tensor::item: tensor of shape " + shape_str(shape_) + " has " +
                     std::to_string(numel()) + " elements, not 1");
  return at<T>(std::vector<std::int64_t>(ndim(), 0));
}

}  // namespace thea
