#include "thea/dtype.hpp"

#include "thea/error.hpp"

namespace thea {

std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::Bool:
    case Dtype::UInt8:
      return 1;
    case Dtype::Int32:
    case Dtype::Float32:
      return 4;
    case Dtype::Int64:
    case Dtype::Float64:
      return 8;
  }
  throw TypeError("dtype_size: invalid dtype value " + std::to_string(static_cast<int>(dtype)));
}

const char* dtype_c_type(Dtype dtype) {
  switch (dtype) {
    case Dtype::Bool:
      return "bool";
    case Dtype::UInt8:
      return "uint8_t";
    case Dtype::Int32:
      return "int32_t";
    case Dtype::Int64:
      return "int64_t";
    case Dtype::Float32:
      return "float";
    case Dtype::Float64:
      return "double";
  }
  return "double";
}

const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::Bool:
      return "bool";
    case Dtype::UInt8:
      return "uint8";
    case Dtype::Int32:
      return "int32";
    case Dtype::Int64:
      return "int64";
    case Dtype::Float32:
      return "float32";
    case Dtype::Float64:
      return "float64";
  }
  return "invalid-dtype";
}

char dtype_letter(Dtype dtype) {
  switch (dtype) {
    case Dtype::Bool:
      return '?';
    case Dtype::UInt8:
      return 'b';
    case Dtype::Int32:
      return 'i';
    case Dtype::Int64:
      return 'l';
    case Dtype::Float32:
      return 'f';
    case Dtype::Float64:
      return 'd';
  }
  return '!';
}

Dtype dtype_from_name(const std::string& name) {
  if (name == "bool") return Dtype::Bool;
  if (name == "uint8") return Dtype::UInt8;
  if (name == "int32") return Dtype::Int32;
  if (name == "int64") return Dtype::Int64;
  if (name == "float32") return Dtype::Float32;
  if (name == "float64") return Dtype::Float64;
  throw TypeError("unknown dtype name '" + name +
                  "' (expected one of bool, uint8, int32, int64, float32, float64)");
}

Dtype promote(Dtype a, Dtype b) {
  if (a == b) return a;
  // The enum is ordered by numpy's "safe cast" lattice; only the mixes where the wider
  // kind cannot hold the narrower one exactly need float64.
  Dtype lo = a < b ? a : b;
  Dtype hi = a < b ? b : a;
  if (hi == Dtype::Float32 && (lo == Dtype::Int32 || lo == Dtype::Int64)) return Dtype::Float64;
  return hi;
}

}  // namespace thea
