#include "thea/data/idx.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

namespace thea::data {
namespace {

std::string hex(unsigned v, int digits) {
  static const char* kHex = "0123456789abcdef";
  std::string s = "0x";
  for (int i = digits - 1; i >= 0; --i) s += kHex[(v >> (4 * i)) & 0xF];
  return s;
}

std::size_t idx_size(IdxType t) {
  switch (t) {
    case IdxType::UByte:
    case IdxType::SByte:
      return 1;
    case IdxType::Short:
      return 2;
    case IdxType::Int:
    case IdxType::Float:
      return 4;
    case IdxType::Double:
      return 8;
  }
  return 0;
}

bool valid_type(std::uint8_t code) {
  return code == 0x08 || code == 0x09 || code == 0x0B || code == 0x0C || code == 0x0D ||
         code == 0x0E;
}

std::uint64_t be_uint(const std::uint8_t* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

void put_be(std::vector<std::uint8_t>& out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw IoError("read_idx: '" + name + "' " + what);
}

std::vector<std::uint8_t> inflate_gzip(const std::vector<std::uint8_t>& in,
                                       const std::string& path) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    throw IoError("read_idx: zlib could not start inflating '" + path + "'");
  std::vector<std::uint8_t> out;
  // The gzip trailer's ISIZE (size mod 2^32) is a good first guess for the output size.
  if (in.size() >= 18) {
    const std::uint64_t isize =
        std::uint64_t{in[in.size() - 4]} | std::uint64_t{in[in.size() - 3]} << 8 |
        std::uint64_t{in[in.size() - 2]} << 16 | std::uint64_t{in[in.size() - 1]} << 24;
    if (isize <= in.size() * 1032) out.reserve(isize);  // deflate's maximum ratio is ~1032:1
  }
  std::size_t in_pos = 0, produced = 0;
  bool ended = false;
  try {
    while (true) {
      if (zs.avail_in == 0 && in_pos < in.size()) {
        const std::size_t chunk = std::min<std::size_t>(in.size() - in_pos, 1u << 30);
        zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
        zs.avail_in = static_cast<uInt>(chunk);
        in_pos += chunk;
      }
      if (out.size() - produced < (1u << 16))
        out.resize(std::max<std::size_t>(out.size() * 2, produced + (1u << 20)));
      const std::size_t room = std::min<std::size_t>(out.size() - produced, 1u << 30);
      zs.next_out = out.data() + produced;
      zs.avail_out = static_cast<uInt>(room);
      const int rc = inflate(&zs, Z_NO_FLUSH);
      produced += room - zs.avail_out;
      if (rc == Z_STREAM_END) {
        const std::size_t left = zs.avail_in + (in.size() - in_pos);
        if (left == 0) {
          ended = true;
          break;
        }
        // Another gzip member may follow (as `cat a.gz b.gz` makes); anything else is junk.
        const std::size_t at = in_pos - zs.avail_in;
        const std::uint8_t* next = in.data() + at;
        if (left >= 2 && next[0] == 0x1f && next[1] == 0x8b) {
          inflateReset(&zs);
          continue;
        }
        throw IoError("read_idx: '" + path + "' is corrupt: " + std::to_string(left) +
                      " bytes of trailing garbage after the gzip stream");
      }
      if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT)
        throw IoError("read_idx: '" + path + "' is a corrupt gzip file (zlib: " +
                      (zs.msg ? zs.msg : "invalid deflate data") + ")");
      if (rc == Z_MEM_ERROR) throw IoError("read_idx: out of memory inflating '" + path + "'");
      if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_pos >= in.size()) break;  // input ran out
      if (rc != Z_OK && rc != Z_BUF_ERROR)
        throw IoError("read_idx: zlib error " + std::to_string(rc) + " inflating '" + path + "'");
    }
  } catch (...) {
    inflateEnd(&zs);
    throw;
  }
  inflateEnd(&zs);
  if (!ended)
    throw IoError("read_idx: '" + path +
                  "' is a truncated gzip file (the compressed stream "
                  "ends early after " +
                  std::to_string(produced) + " decompressed bytes)");
  out.resize(produced);
  return out;
}

std::vector<std::uint8_t> gzip_bytes(const std::vector<std::uint8_t>& in, const std::string& path) {
  if (in.size() > std::numeric_limits<uInt>::max())
    throw IoError("write_idx: data for '" + path + "' is too large to gzip in one piece");
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK)
    throw IoError("write_idx: zlib could not start compressing '" + path + "'");
  std::vector<std::uint8_t> out(deflateBound(&zs, static_cast<uLong>(in.size())) + 64);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const std::size_t n = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw IoError("write_idx: zlib failed compressing '" + path + "'");
  out.resize(n);
  return out;
}

}  // namespace

Dtype idx_dtype(IdxType type) {
  switch (type) {
    case IdxType::UByte:
      return Dtype::UInt8;
    case IdxType::SByte:
    case IdxType::Short:
    case IdxType::Int:
      return Dtype::Int32;
    case IdxType::Float:
      return Dtype::Float32;
    case IdxType::Double:
      return Dtype::Float64;
  }
  throw ValueError("idx_dtype: invalid IDX type code " + hex(static_cast<unsigned>(type), 2));
}

const char* idx_type_name(IdxType type) {
  switch (type) {
    case IdxType::UByte:
      return "ubyte";
    case IdxType::SByte:
      return "sbyte";
    case IdxType::Short:
      return "short";
    case IdxType::Int:
      return "int";
    case IdxType::Float:
      return "float";
    case IdxType::Double:
      return "double";
  }
  return "invalid";
}

std::vector<std::uint8_t> read_maybe_gzip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("read_idx: cannot open '" + path + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  if (size < 0) throw IoError("read_idx: cannot determine the size of '" + path + "'");
  in.seekg(0);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  if (in.gcount() != size) throw IoError("read_idx: reading '" + path + "' failed");
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) return inflate_gzip(bytes, path);
  return bytes;
}

Tensor parse_idx(const std::vector<std::uint8_t>& b, const std::string& name) {
  const std::size_t n = b.size();
  if (n < 4)
    fail(name,
         "has a truncated header: " + std::to_string(n) + " bytes, an IDX file needs at least 4");
  if (b[0] != 0 || b[1] != 0)
    fail(name, "is not an IDX file: bad magic number " +
                   hex(static_cast<unsigned>(be_uint(b.data(), 4)), 8) +
                   " (IDX files start with 00 00 <type> <rank>)");
  if (!valid_type(b[2]))
    fail(name, "is corrupt: unknown IDX element type " + hex(b[2], 2) +
                   " (known: 08 ubyte, 09 sbyte, 0b short, 0c int, 0d float, 0e double)");
  const auto type = static_cast<IdxType>(b[2]);
  const int rank = b[3];
  if (rank == 0) fail(name, "is corrupt: rank 0 in the header (an IDX array has rank >= 1)");
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(rank);
  if (n < header)
    fail(name, "has a truncated header: rank " + std::to_string(rank) + " needs " +
                   std::to_string(header) + " header bytes but the file has " + std::to_string(n));
  Shape shape(rank);
  const std::size_t esize = idx_size(type);
  std::uint64_t need = esize;
  bool overflow = false;
  for (int i = 0; i < rank; ++i) {
    shape[i] = static_cast<std::int64_t>(be_uint(b.data() + 4 + 4 * i, 4));
    if (shape[i] != 0 &&
        need > std::numeric_limits<std::uint64_t>::max() / 2 / static_cast<std::uint64_t>(shape[i]))
      overflow = true;
    else
      need *= static_cast<std::uint64_t>(shape[i]);
  }
  const std::uint64_t have = n - header;
  const std::string what = std::string("sizes ") + shape_str(shape) + " of " + idx_type_name(type) +
                           " (" + std::to_string(esize) + " bytes each)";
  if (overflow || have < need)
    fail(name, "is truncated or has a wrong rank/size in its header: " + what + " need " +
                   (overflow ? std::string("more") : std::to_string(need)) +
                   " data bytes but only " + std::to_string(have) + " follow the header");
  if (have > need)
    fail(name, "is corrupt or has a wrong rank/size in its header: " + what + " need " +
                   std::to_string(need) + " data bytes but " + std::to_string(have) +
                   " follow the header");

  Tensor t = Tensor::empty(shape, idx_dtype(type));
  const std::uint8_t* src = b.data() + header;
  const std::size_t count = static_cast<std::size_t>(t.numel());
  switch (type) {
    case IdxType::UByte:
      std::memcpy(t.raw_data(), src, count);
      break;
    case IdxType::SByte: {
      auto* o = t.data<std::int32_t>();
      for (std::size_t i = 0; i < count; ++i) o[i] = static_cast<std::int8_t>(src[i]);
      break;
    }
    case IdxType::Short: {
      auto* o = t.data<std::int32_t>();
      for (std::size_t i = 0; i < count; ++i)
        o[i] = static_cast<std::int16_t>(be_uint(src + 2 * i, 2));
      break;
    }
    case IdxType::Int: {
      auto* o = t.data<std::int32_t>();
      for (std::size_t i = 0; i < count; ++i)
        o[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(be_uint(src + 4 * i, 4)));
      break;
    }
    case IdxType::Float: {
      auto* o = t.data<float>();
      for (std::size_t i = 0; i < count; ++i) {
        const auto bits = static_cast<std::uint32_t>(be_uint(src + 4 * i, 4));
        std::memcpy(&o[i], &bits, 4);
      }
      break;
    }
    case IdxType::Double: {
      auto* o = t.data<double>();
      for (std::size_t i = 0; i < count; ++i) {
        const std::uint64_t bits = be_uint(src + 8 * i, 8);
        std::memcpy(&o[i], &bits, 8);
      }
      break;
    }
  }
  return t;
}

std::vector<std::uint8_t> gzip_compress(const std::vector<std::uint8_t>& bytes) {
  return gzip_bytes(bytes, "<memory>");
}

Tensor read_idx(const std::string& path) { return parse_idx(read_maybe_gzip(path), path); }

void write_idx(const std::string& path, const Tensor& tensor, std::optional<IdxType> type,
               bool gzip) {
  if (!tensor.defined()) throw ValueError("write_idx: undefined tensor for '" + path + "'");
  if (tensor.ndim() < 1 || tensor.ndim() > 255)
    throw ValueError("write_idx: IDX needs rank 1..255, got " + tensor.describe() + " for '" +
                     path + "'");
  for (auto d : tensor.shape())
    if (d > 0xFFFFFFFFLL)
      throw ValueError("write_idx: dimension " + std::to_string(d) + " does not fit IDX's 32 bits");
  if (!type) {
    switch (tensor.dtype()) {
      case Dtype::Bool:
      case Dtype::UInt8:
        type = IdxType::UByte;
        break;
      case Dtype::Int32:
        type = IdxType::Int;
        break;
      case Dtype::Float32:
        type = IdxType::Float;
        break;
      case Dtype::Float64:
        type = IdxType::Double;
        break;
      case Dtype::Int64:
        throw TypeError("write_idx: IDX has no 64-bit integer type; pass IdxType::Int to write " +
                        tensor.describe() + " as 32-bit");
    }
  }
  if (!valid_type(static_cast<std::uint8_t>(*type)))
    throw ValueError("write_idx: invalid IDX type code " + hex(static_cast<unsigned>(*type), 2));

  std::vector<std::uint8_t> out;
  const std::size_t esize = idx_size(*type);
  out.reserve(4 + 4 * tensor.ndim() + esize * static_cast<std::size_t>(tensor.numel()));
  out.insert(out.end(),
             {0, 0, static_cast<std::uint8_t>(*type), static_cast<std::uint8_t>(tensor.ndim())});
  for (auto d : tensor.shape()) put_be(out, static_cast<std::uint64_t>(d), 4);

  // Integer targets take only values they hold exactly; floats are rounded to the target.
  auto check_int = [&](double v, double lo, double hi, std::size_t i) {
    if (!(v >= lo && v <= hi) || v != std::floor(v))
      throw ValueError("write_idx: element " + std::to_string(i) + " = " + std::to_string(v) +
                       " of " + tensor.describe() + " does not fit IDX type " +
                       idx_type_name(*type) + " (writing '" + path + "')");
  };
  const std::vector<double> values = tensor.to_vector();
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    switch (*type) {
      case IdxType::UByte:
        check_int(v, 0, 255, i);
        put_be(out, static_cast<std::uint8_t>(v), 1);
        break;
      case IdxType::SByte:
        check_int(v, -128, 127, i);
        put_be(out, static_cast<std::uint8_t>(static_cast<std::int8_t>(v)), 1);
        break;
      case IdxType::Short:
        check_int(v, -32768, 32767, i);
        put_be(out, static_cast<std::uint16_t>(static_cast<std::int16_t>(v)), 2);
        break;
      case IdxType::Int:
        check_int(v, -2147483648.0, 2147483647.0, i);
        put_be(out, static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4);
        break;
      case IdxType::Float: {
        const float f = static_cast<float>(v);
        std::uint32_t bits;
        std::memcpy(&bits, &f, 4);
        put_be(out, bits, 4);
        break;
      }
      case IdxType::Double: {
        std::uint64_t bits;
        std::memcpy(&bits, &v, 8);
        put_be(out, bits, 8);
        break;
      }
    }
  }
  if (gzip) out = gzip_bytes(out, path);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f)
    throw IoError("write_idx: cannot open '" + path + "' for writing: " + std::strerror(errno));
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  f.close();
  if (!f) throw IoError("write_idx: writing '" + path + "' failed (disk full?)");
}

}  // namespace thea::data
