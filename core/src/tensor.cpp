#include "thea/tensor.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <numbers>
#include <ostream>
#include <sstream>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace thea {

// ---------------------------------------------------------------- shapes

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";  // numpy/Python spelling of a 1-tuple
  return s + ")";
}

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Strides contiguous_strides(const Shape& shape) {
  Strides s(shape.size());
  std::int64_t acc = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= std::max<std::int64_t>(shape[i], 1);
  }
  return s;
}

namespace {

constexpr std::size_t kAlignment = 64;
constexpr std::size_t kHugePage = std::size_t{2} << 20;

// Rejects negative sizes and element counts that would overflow the byte count.
void check_shape(const Shape& shape, Dtype dtype, const char* where) {
  std::int64_t n = 1;
  const std::int64_t limit =
      std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(dtype_size(dtype));
  for (auto d : shape) {
    if (d < 0)
      throw ValueError(std::string(where) + ": negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > limit / d)
      throw ValueError(std::string(where) + ": shape " + shape_str(shape) + " is too large");
    n *= d;
  }
}

int normalize_axis(int axis, int ndim, const char* where, const Shape& shape) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim)
    throw ValueError(std::string(where) + ": axis " + std::to_string(axis) +
                     " out of range for a tensor of shape " + shape_str(shape));
  return a;
}

// double -> T without undefined behaviour: NaN becomes 0 and out-of-range values saturate for
// integer targets (C++ leaves those conversions undefined; numpy leaves them unspecified).
template <class T>
T convert(double v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v != 0.0;
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (std::isnan(v)) return T{0};
    constexpr double lo = static_cast<double>(std::numeric_limits<T>::min());
    constexpr double hi = static_cast<double>(std::numeric_limits<T>::max());
    if (v <= lo) return std::numeric_limits<T>::min();
    if (v >= hi) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  }
}

// S -> D conversion with the same guarantees as convert<D>.
template <class D, class S>
D convert_from(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<D, bool>) {
    return v != S{0};
  } else if constexpr (std::is_floating_point_v<S> && !std::is_floating_point_v<D>) {
    return convert<D>(static_cast<double>(v));
  } else {
    // integer -> integer wraps like numpy's astype; integer/float -> float is always defined.
    return static_cast<D>(v);
  }
}

// Calls fn(offset) for every element of (shape, strides, base offset) in row-major order.
template <class Fn>
void for_each_offset(const Shape& shape, const Strides& strides, std::int64_t base, Fn&& fn) {
  const int nd = static_cast<int>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    fn(base);
    return;
  }
  std::vector<std::int64_t> idx(nd, 0);
  const std::int64_t inner = shape[nd - 1];
  const std::int64_t inner_stride = strides[nd - 1];
  std::int64_t off = base;
  while (true) {
    for (std::int64_t i = 0; i < inner; ++i) fn(off + i * inner_stride);
    int d = nd - 2;
    for (; d >= 0; --d) {
      off += strides[d];
      if (++idx[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// Two tensors of one shape walked together: fn(offset_a, offset_b).
template <class Fn>
void for_each_offset2(const Shape& shape, const Strides& sa, std::int64_t ba, const Strides& sb,
                      std::int64_t bb, Fn&& fn) {
  const int nd = static_cast<int>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    fn(ba, bb);
    return;
  }
  std::vector<std::int64_t> idx(nd, 0);
  const std::int64_t inner = shape[nd - 1];
  const std::int64_t ia = sa[nd - 1], ib = sb[nd - 1];
  std::int64_t oa = ba, ob = bb;
  while (true) {
    for (std::int64_t i = 0; i < inner; ++i) fn(oa + i * ia, ob + i * ib);
    int d = nd - 2;
    for (; d >= 0; --d) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// ---- portable random numbers: splitmix64 seeds xoshiro256**, both fully specified by
// their integer arithmetic, so a seed gives the same stream on every platform.
std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Xoshiro256 {
 public:
  explicit Xoshiro256(std::uint64_t seed) {
    for (auto& s : s_) s = splitmix64(seed);
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Standard normal by Marsaglia's polar form of Box-Muller: needs only log and sqrt (no
  // sin/cos), which keeps results closer to identical across math libraries.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double m = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * m;
    has_spare_ = true;
    return u * m;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace

// ---------------------------------------------------------------- Storage

Storage::Storage(std::size_t nbytes) : nbytes_(nbytes) {
  // Big arrays (datasets streamed every epoch) go on 2 MiB transparent huge pages where the
  // kernel offers them on request: one TLB entry per 2 MiB instead of 512, and 512 times
  // fewer page faults when first written (PyTorch does the same for large CPU tensors).
  const std::size_t align = nbytes >= kHugePage ? kHugePage : kAlignment;
  // Always allocate at least one aligned block so data() is never null, even for empty tensors.
  std::size_t rounded = (std::max<std::size_t>(nbytes, 1) + align - 1) / align * align;
  data_ = std::aligned_alloc(align, rounded);
  if (!data_)
    throw Error("Storage: out of host memory allocating " + std::to_string(nbytes) + " bytes");
#if defined(MADV_HUGEPAGE)
  if (align == kHugePage) ::madvise(data_, rounded, MADV_HUGEPAGE);  // advice: failure is fine
#endif
}

Storage::~Storage() { std::free(data_); }

struct Storage::Pending {
  std::function<void(void*)> fill;
  std::once_flag once;
  std::atomic<bool> done{false};
};

void Storage::set_pending(std::function<void(void*)> fill) {
  pending_ = std::make_unique<Pending>();
  pending_->fill = std::move(fill);
}

bool Storage::settled() const {
  return !pending_ || pending_->done.load(std::memory_order_acquire);
}

void Storage::settle() const {
  Pending& p = *pending_;
  if (p.done.load(std::memory_order_acquire)) return;
  // A fill that throws (a device error) leaves the flag unset: the next access retries.
  std::call_once(p.once, [&] {
    p.fill(data_);
    p.fill = nullptr;
    p.done.store(true, std::memory_order_release);
  });
}

// ---------------------------------------------------------------- construction

Tensor::Tensor(std::shared_ptr<Storage> storage, std::int64_t offset, Shape shape, Strides strides,
               Dtype dtype)
    : storage_(std::move(storage)),
      offset_(offset),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      dtype_(dtype) {
  if (!storage_) throw ValueError("Tensor: null storage");
  if (shape_.size() != strides_.size())
    throw ValueError("Tensor: shape " + shape_str(shape_) + " and strides " + shape_str(strides_) +
                     " differ in rank");
  check_shape(shape_, dtype_, "Tensor");
  if (offset_ < 0) throw ValueError("Tensor: negative storage offset " + std::to_string(offset_));
  // The view must stay inside its storage: check the lowest and highest element reached.
  if (shape_numel(shape_) > 0) {
    std::int64_t lo = offset_, hi = offset_;
    for (std::size_t i = 0; i < shape_.size(); ++i) {
      const std::int64_t span = (shape_[i] - 1) * strides_[i];
      (span < 0 ? lo : hi) += span;
    }
    const auto capacity = static_cast<std::int64_t>(storage_->nbytes() / dtype_size(dtype_));
    if (lo < 0 || hi >= capacity)
      throw ValueError("Tensor: view " + shape_str(shape_) + " with strides " +
                       shape_str(strides_) + " at offset " + std::to_string(offset_) +
                       " reaches outside its storage of " + std::to_string(capacity) + " " +
                       dtype_name(dtype_) + " elements");
  }
}

Tensor Tensor::empty(const Shape& shape, Dtype dtype) {
  check_shape(shape, dtype, "Tensor::empty");
  auto storage =
      std::make_shared<Storage>(static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype));
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Dtype dtype) {
  Tensor t = empty(shape, dtype);
  // All-zero bytes are 0 / 0.0 / false for every dtype.
  std::memset(t.raw_data(), 0, static_cast<std::size_t>(t.numel()) * dtype_size(dtype));
  return t;
}

Tensor Tensor::ones(const Shape& shape, Dtype dtype) { return full(shape, 1.0, dtype); }

Tensor Tensor::full(const Shape& shape, double value, Dtype dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Tensor::scalar(double value, Dtype dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(std::int64_t n, Dtype dtype) {
  if (n < 0) throw ValueError("Tensor::arange: negative length " + std::to_string(n));
  Tensor t = empty({n}, dtype);
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.raw_data());
    for (std::int64_t i = 0; i < n; ++i) p[i] = convert<T>(static_cast<double>(i));
  });
  return t;
}

Tensor Tensor::random_normal(const Shape& shape, double mean, double stddev, std::uint64_t seed,
                             Dtype dtype) {
  if (!is_float(dtype))
    throw TypeError(std::string("random_normal: dtype must be float32 or float64, not ") +
                    dtype_name(dtype));
  if (!(stddev >= 0.0) || !std::isfinite(stddev) || !std::isfinite(mean))
    throw ValueError("random_normal: need a finite mean and a finite stddev >= 0, got mean " +
                     std::to_string(mean) + ", stddev " + std::to_string(stddev));
  Tensor t = empty(shape, dtype);
  Xoshiro256 rng(seed);
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.raw_data());
    for (std::int64_t i = 0, n = t.numel(); i < n; ++i)
      p[i] = static_cast<T>(mean + stddev * rng.normal());
  });
  return t;
}

Tensor Tensor::random_uniform(const Shape& shape, double low, double high, std::uint64_t seed,
                              Dtype dtype) {
  if (dtype == Dtype::Bool) throw TypeError("random_uniform: bool dtype is not supported");
  if (!std::isfinite(low) || !std::isfinite(high) || high < low)
    throw ValueError("random_uniform: need finite low <= high, got [" + std::to_string(low) + ", " +
                     std::to_string(high) + ")");
  Tensor t = empty(shape, dtype);
  Xoshiro256 rng(seed);
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.raw_data());
    for (std::int64_t i = 0, n = t.numel(); i < n; ++i) {
      const double v = low + (high - low) * rng.uniform();
      // Integers: floor, so integral bounds give values in [low, high) like numpy's randint.
      if constexpr (std::is_floating_point_v<T>) {
        p[i] = static_cast<T>(v);
        // Rounding to float32 can land exactly on `high`; keep the interval half-open.
        if (p[i] >= static_cast<T>(high) && high > low)
          p[i] = std::nextafter(static_cast<T>(high), static_cast<T>(low));
      } else {
        p[i] = convert<T>(std::floor(v));
      }
    }
  });
  return t;
}

Tensor random_normal(const Shape& shape, double mean, double stddev, std::uint64_t seed,
                     Dtype dtype) {
  return Tensor::random_normal(shape, mean, stddev, seed, dtype);
}
Tensor random_uniform(const Shape& shape, double low, double high, std::uint64_t seed,
                      Dtype dtype) {
  return Tensor::random_uniform(shape, low, high, seed, dtype);
}

Tensor Tensor::from_list(std::initializer_list<double> values, Dtype dtype) {
  Tensor t = empty({static_cast<std::int64_t>(values.size())}, dtype);
  std::int64_t i = 0;
  for (double v : values) t.set({i++}, v);
  return t;
}

Tensor Tensor::from_list(std::initializer_list<std::initializer_list<double>> rows, Dtype dtype) {
  const auto n = static_cast<std::int64_t>(rows.size());
  const auto m = n ? static_cast<std::int64_t>(rows.begin()->size()) : 0;
  std::int64_t r = 0;
  for (const auto& row : rows) {
    if (static_cast<std::int64_t>(row.size()) != m)
      throw ShapeError("Tensor::from_list: row " + std::to_string(r) + " has " +
                       std::to_string(row.size()) + " values but row 0 has " + std::to_string(m));
    ++r;
  }
  Tensor t = empty({n, m}, dtype);
  r = 0;
  for (const auto& row : rows) {
    std::int64_t c = 0;
    for (double v : row) t.set({r, c++}, v);
    ++r;
  }
  return t;
}

// ---------------------------------------------------------------- accessors

std::int64_t Tensor::size(int axis) const {
  return shape_[normalize_axis(axis, ndim(), "Tensor::size", shape_)];
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  std::int64_t expected = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::raw_data() {
  if (!storage_) throw ValueError("Tensor::raw_data: tensor is undefined");
  return static_cast<char*>(storage_->data()) +
         offset_ * static_cast<std::int64_t>(dtype_size(dtype_));
}

const void* Tensor::raw_data() const { return const_cast<Tensor*>(this)->raw_data(); }

void Tensor::set(const std::vector<std::int64_t>& index, double value) {
  if (static_cast<int>(index.size()) != ndim())
    throw ValueError("Tensor::set: index of rank " + std::to_string(index.size()) +
                     " for a tensor of shape " + shape_str(shape_));
  std::int64_t off = 0;
  for (int i = 0; i < ndim(); ++i) {
    if (index[i] < 0 || index[i] >= shape_[i])
      throw ValueError("Tensor::set: index " + std::to_string(index[i]) +
                       " out of range for axis " + std::to_string(i) + " of shape " +
                       shape_str(shape_));
    off += index[i] * strides_[i];
  }
  visit_dtype(dtype_, [&](auto tag) {
    using T = decltype(tag);
    static_cast<T*>(raw_data())[off] = convert<T>(value);
  });
}

// ---------------------------------------------------------------- views

Tensor Tensor::slice(int axis, std::int64_t begin, std::int64_t end, std::int64_t step) const {
  if (!defined()) throw ValueError("Tensor::slice: tensor is undefined");
  const int a = normalize_axis(axis, ndim(), "Tensor::slice", shape_);
  if (step == 0) throw ValueError("Tensor::slice: step cannot be zero");
  // Python's slice.indices(): negative bounds count from the end, then clamp.
  const std::int64_t len = shape_[a];
  const std::int64_t lower = step > 0 ? 0 : -1;
  const std::int64_t upper = step > 0 ? len : len - 1;
  auto clamp = [&](std::int64_t v) {
    if (v < 0) v = v < -len ? lower : v + len;  // avoids overflow for INT64_MIN
    if (v < lower) v = lower;
    if (v > upper) v = upper;
    return v;
  };
  const std::int64_t start = clamp(begin), stop = clamp(end);
  std::int64_t count = 0;
  if (step > 0 && stop > start) count = (stop - start - 1) / step + 1;
  if (step < 0 && start > stop) count = (start - stop - 1) / (-step) + 1;
  Shape shape = shape_;
  Strides strides = strides_;
  shape[a] = count;
  strides[a] = strides_[a] * step;
  const std::int64_t offset = count > 0 ? offset_ + start * strides_[a] : offset_;
  return Tensor(storage_, offset, std::move(shape), std::move(strides), dtype_);
}

Tensor Tensor::select(int axis, std::int64_t index) const {
  if (!defined()) throw ValueError("Tensor::select: tensor is undefined");
  const int a = normalize_axis(axis, ndim(), "Tensor::select", shape_);
  const std::int64_t i = index < 0 ? index + shape_[a] : index;
  if (i < 0 || i >= shape_[a])
    throw ValueError("Tensor::select: index " + std::to_string(index) + " out of range for axis " +
                     std::to_string(axis) + " of shape " + shape_str(shape_));
  Shape shape = shape_;
  Strides strides = strides_;
  shape.erase(shape.begin() + a);
  strides.erase(strides.begin() + a);
  return Tensor(storage_, offset_ + i * strides_[a], std::move(shape), std::move(strides), dtype_);
}

Tensor Tensor::permute(const std::vector<int>& axes) const {
  if (!defined()) throw ValueError("Tensor::permute: tensor is undefined");
  auto bad = [&] {
    std::string s = "(";
    for (std::size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + std::to_string(axes[i]);
    return ValueError("Tensor::permute: axes " + s + ") are not a permutation of the " +
                      std::to_string(ndim()) + " axes of shape " + shape_str(shape_));
  };
  if (static_cast<int>(axes.size()) != ndim()) throw bad();
  std::vector<bool> seen(ndim(), false);
  Shape shape(ndim());
  Strides strides(ndim());
  for (int i = 0; i < ndim(); ++i) {
    int a = axes[i] < 0 ? axes[i] + ndim() : axes[i];
    if (a < 0 || a >= ndim() || seen[a]) throw bad();
    seen[a] = true;
    shape[i] = shape_[a];
    strides[i] = strides_[a];
  }
  return Tensor(storage_, offset_, std::move(shape), std::move(strides), dtype_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (!defined()) throw ValueError("Tensor::reshape: tensor is undefined");
  Shape out = shape;
  int infer = -1;
  std::int64_t known = 1;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      if (infer >= 0) throw ValueError("Tensor::reshape: more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else if (out[i] < 0) {
      throw ValueError("Tensor::reshape: negative dimension in " + shape_str(shape));
    } else {
      known *= out[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel() % known != 0)
      throw ShapeError("Tensor::reshape: cannot reshape " + describe() + " into " +
                       shape_str(shape));
    out[infer] = numel() / known;
  }
  if (shape_numel(out) != numel())
    throw ShapeError("Tensor::reshape: cannot reshape " + describe() + " (" +
                     std::to_string(numel()) + " elements) into " + shape_str(shape));
  Tensor src = contiguous();
  return Tensor(src.storage_, src.offset_, out, contiguous_strides(out), dtype_);
}

Tensor Tensor::contiguous() const {
  if (!defined()) throw ValueError("Tensor::contiguous: tensor is undefined");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const { return astype(dtype_); }

Tensor Tensor::astype(Dtype dtype) const {
  if (!defined()) throw ValueError("Tensor::astype: tensor is undefined");
  Tensor t = empty(shape_, dtype);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src_in) {
  if (!defined() || !src_in.defined()) throw ValueError("Tensor::copy_from: undefined tensor");
  if (src_in.shape_ != shape_)
    throw ShapeError("Tensor::copy_from: source " + src_in.describe() + " does not match " +
                     describe());
  // Shared storage may overlap in any pattern: read from a private copy then.
  const Tensor src = src_in.storage_ == storage_ && numel() > 0 ? src_in.clone() : src_in;
  if (src.dtype_ == dtype_ && is_contiguous() && src.is_contiguous()) {
    std::memcpy(raw_data(), src.raw_data(), static_cast<std::size_t>(numel()) * dtype_size(dtype_));
    return;
  }
  visit_dtype(dtype_, [&](auto dtag) {
    using D = decltype(dtag);
    visit_dtype(src.dtype_, [&](auto stag) {
      using S = decltype(stag);
      D* d = static_cast<D*>(raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      for_each_offset2(shape_, strides_, 0, src.strides_, 0,
                       [&](std::int64_t od, std::int64_t os) { d[od] = convert_from<D>(s[os]); });
    });
  });
}

void Tensor::fill(double value) {
  if (!defined()) throw ValueError("Tensor::fill: tensor is undefined");
  visit_dtype(dtype_, [&](auto tag) {
    using T = decltype(tag);
    const T v = convert<T>(value);
    T* p = static_cast<T*>(raw_data());
    for_each_offset(shape_, strides_, 0, [&](std::int64_t o) { p[o] = v; });
  });
}

std::vector<double> Tensor::to_vector() const {
  if (!defined()) throw ValueError("Tensor::to_vector: tensor is undefined");
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(numel()));
  visit_dtype(dtype_, [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(raw_data());
    for_each_offset(shape_, strides_, 0,
                    [&](std::int64_t o) { out.push_back(static_cast<double>(p[o])); });
  });
  return out;
}

// ---------------------------------------------------------------- printing

namespace {

// Digits after the point needed to show v with at most `max_prec` decimals, exactly as
// numpy's default "maxprec" float mode does.
int needed_decimals(double v, int max_prec, bool sci) {
  char buf[64];
  std::snprintf(buf, sizeof buf, sci ? "%.*e" : "%.*f", max_prec, v);
  std::string s(buf);
  std::size_t dot = s.find('.');
  if (dot == std::string::npos) return 0;
  std::size_t end = sci ? s.find('e') : s.size();
  std::size_t last = end;
  while (last > dot + 1 && s[last - 1] == '0') --last;
  return static_cast<int>(last - dot - 1);
}

struct FloatFormat {
  bool sci = false;
  int decimals = 0;
};

std::string format_float(double v, const FloatFormat& f) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, f.sci ? "%.*e" : "%.*f", f.decimals, v);
  std::string s(buf);
  if (f.decimals == 0) {
    // numpy writes 1.0 as "1." and 1e-05 as "1.e-05".
    std::size_t e = s.find('e');
    if (e == std::string::npos)
      s += ".";
    else
      s.insert(e, ".");
  } else if (!f.sci) {
    // Fixed notation: numpy drops trailing zeros but keeps the columns aligned with spaces.
    std::size_t keep = s.size();
    while (s[keep - 1] == '0') --keep;
    const std::size_t dropped = s.size() - keep;
    s.resize(keep);
    s.append(dropped, ' ');
  }
  return s;
}

}  // namespace

std::string Tensor::to_string(int max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  const int nd = ndim();
  // Which indices of each axis are shown: all, or the first and last few around "...".
  const std::int64_t edge = max_per_dim > 0 ? std::max(1, max_per_dim / 2) : 0;
  auto elided = [&](int axis) { return max_per_dim > 0 && shape_[axis] > max_per_dim; };

  // Gather the shown values to choose one format for them all, like numpy.
  std::vector<double> shown;
  {
    std::vector<std::int64_t> idx(nd, 0);
    std::function<void(int)> walk = [&](int d) {
      if (d == nd) {
        shown.push_back(at<double>(idx));
        return;
      }
      for (std::int64_t i = 0; i < shape_[d]; ++i) {
        if (elided(d) && i == edge) i = shape_[d] - edge;
        idx[d] = i;
        walk(d + 1);
      }
    };
    walk(0);
  }

  std::vector<std::string> text;
  text.reserve(shown.size());
  if (dtype_ == Dtype::Bool) {
    for (double v : shown) text.push_back(v != 0 ? "True" : "False");
  } else if (is_integer(dtype_)) {
    for (double v : shown) text.push_back(std::to_string(static_cast<std::int64_t>(v)));
  } else {
    double max_abs = 0, min_abs = std::numeric_limits<double>::infinity();
    for (double v : shown) {
      if (!std::isfinite(v)) continue;
      max_abs = std::max(max_abs, std::abs(v));
      if (v != 0) min_abs = std::min(min_abs, std::abs(v));
    }
    FloatFormat f;
    const int prec = 8;  // numpy's default print precision
    f.sci =
        max_abs >= 1e8 || (std::isfinite(min_abs) && (min_abs < 1e-4 || max_abs / min_abs > 1e3));
    for (double v : shown)
      if (std::isfinite(v)) f.decimals = std::max(f.decimals, needed_decimals(v, prec, f.sci));
    for (double v : shown) text.push_back(format_float(v, f));
  }
  std::size_t width = 0;
  for (const auto& s : text) width = std::max(width, s.size());
  for (auto& s : text) s.insert(0, width - s.size(), ' ');

  if (nd == 0) return text.empty() ? std::string() : text[0];

  std::string out;
  std::size_t k = 0;
  std::function<void(int)> emit = [&](int d) {
    out += '[';
    for (std::int64_t i = 0; i < shape_[d]; ++i) {
      if (elided(d) && i == edge) {
        out += "...";
        i = shape_[d] - edge;
        if (d == nd - 1)
          out += ", ";
        else
          out += ",\n" + std::string(nd - 1 - d - 1, '\n') + std::string(d + 1, ' ');
      }
      if (d == nd - 1) {
        out += text[k++];
      } else {
        emit(d + 1);
      }
      if (i + 1 < shape_[d]) {
        if (d == nd - 1) out += ", ";
        // Rows on new lines; blank lines between higher-rank blocks, as numpy prints them.
        else
          out += ",\n" + std::string(nd - 1 - d - 1, '\n') + std::string(d + 1, ' ');
      }
    }
    out += ']';
  };
  emit(0);
  return out;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype_)) + " " + shape_str(shape_);
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

// ---------------------------------------------------------------- comparison

namespace {
template <class Fn>
void visit_pairs(const Tensor& a, const Tensor& b, Fn&& fn) {
  visit_dtype(a.dtype(), [&](auto at) {
    using A = decltype(at);
    visit_dtype(b.dtype(), [&](auto bt) {
      using B = decltype(bt);
      const A* pa = static_cast<const A*>(a.raw_data());
      const B* pb = static_cast<const B*>(b.raw_data());
      for_each_offset2(a.shape(), a.strides(), 0, b.strides(), 0,
                       [&](std::int64_t oa, std::int64_t ob) {
                         fn(static_cast<double>(pa[oa]), static_cast<double>(pb[ob]));
                       });
    });
  });
}
}  // namespace

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (!a.defined() || !b.defined()) throw ValueError("allclose: undefined tensor");
  if (a.shape() != b.shape()) return false;
  bool ok = true;
  visit_pairs(a, b, [&](double x, double y) {
    if (!ok) return;
    if (x == y) return;                                               // also equal infinities
    if (!(std::abs(x - y) <= atol + rtol * std::abs(y))) ok = false;  // NaN fails
  });
  return ok;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) throw ValueError("max_abs_diff: undefined tensor");
  if (a.shape() != b.shape())
    throw ShapeError("max_abs_diff: shapes differ: " + a.describe() + " vs " + b.describe());
  double m = 0;
  visit_pairs(a, b, [&](double x, double y) {
    if (x == y) return;
    const double d = std::abs(x - y);
    if (std::isnan(m)) return;  // a NaN difference is reported as NaN
    if (std::isnan(d) || d > m) m = d;
  });
  return m;
}

}  // namespace thea
