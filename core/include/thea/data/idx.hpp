// IDX files (the MNIST format): big-endian header "00 00 <type> <rank>", rank 32-bit
// sizes, then the elements in row-major order. Files may be gzip-compressed; compression is
// detected by the gzip magic bytes (1f 8b), not by the file name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "thea/tensor.hpp"

namespace thea::data {

// IDX element type codes.
enum class IdxType : std::uint8_t {
  UByte = 0x08,   // -> uint8
  SByte = 0x09,   // -> int32 (thea has no int8)
  Short = 0x0B,   // -> int32
  Int = 0x0C,     // -> int32
  Float = 0x0D,   // -> float32
  Double = 0x0E,  // -> float64
};

// The thea dtype an IDX element type is read as.
Dtype idx_dtype(IdxType type);
// "ubyte", "sbyte", "short", "int", "float", "double".
const char* idx_type_name(IdxType type);

// Reads an IDX file, raw or gzip-compressed. Throws IoError naming the file and the problem
// when it is missing, unreadable, truncated, too long, or corrupt (bad magic, unknown element
// type, zero rank, sizes that disagree with the data length, broken gzip stream).
Tensor read_idx(const std::string& path);
// Parses IDX bytes already in memory (decompressed or not); `name` is used in messages.
Tensor parse_idx(const std::vector<std::uint8_t>& bytes, const std::string& name);

// Writes `tensor` (rank 1..255) as IDX. `type` defaults to the natural code for the dtype
// (uint8/bool -> ubyte, int32 -> int, float32 -> float, float64 -> double; int64 needs an
// explicit type). Values that do not fit `type` raise ValueError; `gzip` compresses the file.
void write_idx(const std::string& path, const Tensor& tensor,
               std::optional<IdxType> type = std::nullopt, bool gzip = false);

// Whole-file read that inflates gzip data (one or more members) when the bytes start with
// 1f 8b; IoError for a missing, truncated or corrupt file.
std::vector<std::uint8_t> read_maybe_gzip(const std::string& path);
// One gzip member holding `bytes` (what write_idx(..., gzip=true) writes after the header).
std::vector<std::uint8_t> gzip_compress(const std::vector<std::uint8_t>& bytes);

}  // namespace thea::data
