// Element types of thea tensors and the promotion rules between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace thea {

enum class Dtype : std::uint8_t { Bool, UInt8, Int32, Int64, Float32, Float64 };

std::size_t dtype_size(Dtype dtype);
// numpy spelling: "float32", "int64", "bool", ...
const char* dtype_name(Dtype dtype);
// The C/C++ spelling in generated kernels ("float", "int64_t", "bool", ...), shared by every
// renderer so cpu and cuda code agree.
const char* dtype_c_type(Dtype dtype);
// Theano's short letter used in type names: f (float32), d, i, l, b (uint8), ? (bool).
char dtype_letter(Dtype dtype);
Dtype dtype_from_name(const std::string& name);  // throws TypeError on unknown

inline bool is_float(Dtype d) { return d == Dtype::Float32 || d == Dtype::Float64; }
inline bool is_integer(Dtype d) {
  return d == Dtype::UInt8 || d == Dtype::Int32 || d == Dtype::Int64;
}

// numpy's result_type for two arrays (bool < uint8 < int32 < int64 < float32 < float64,
// except uint8/int32 mixes and int64/float32 -> float64, as numpy does).
Dtype promote(Dtype a, Dtype b);

template <class T>
struct DtypeOf;
template <>
struct DtypeOf<bool> {
  static constexpr Dtype value = Dtype::Bool;
};
template <>
struct DtypeOf<std::uint8_t> {
  static constexpr Dtype value = Dtype::UInt8;
};
template <>
struct DtypeOf<std::int32_t> {
  static constexpr Dtype value = Dtype::Int32;
};
template <>
struct DtypeOf<std::int64_t> {
  static constexpr Dtype value = Dtype::Int64;
};
template <>
struct DtypeOf<float> {
  static constexpr Dtype value = Dtype::Float32;
};
template <>
struct DtypeOf<double> {
  static constexpr Dtype value = Dtype::Float64;
};
template <class T>
inline constexpr Dtype dtype_of = DtypeOf<T>::value;

// Calls fn(T{}) with T the C++ type of `dtype`; the one switch every kernel dispatch uses.
template <class Fn>
decltype(auto) visit_dtype(Dtype dtype, Fn&& fn) {
  switch (dtype) {
    case Dtype::Bool:
      return fn(bool{});
    case Dtype::UInt8:
      return fn(std::uint8_t{});
    case Dtype::Int32:
      return fn(std::int32_t{});
    case Dtype::Int64:
      return fn(std::int64_t{});
    case Dtype::Float32:
      return fn(float{});
    case Dtype::Float64:
      break;
  }
  return fn(double{});
}

}  // namespace thea
