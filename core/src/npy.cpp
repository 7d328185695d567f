// NumPy .npy reading and writing (format versions 1.0, 2.0 and 3.0).
// Spec: numpy/lib/format.py. Header: magic "\x93NUMPY", major, minor, little-endian header
// length (2 bytes in 1.0, 4 bytes after), then a Python dict literal padded to 64 bytes.
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "thea/tensor.hpp"

namespace thea {
namespace {

static_assert(sizeof(bool) == 1, "npy bool data is one byte per element");

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kAlign = 64;
// Far above any real header; a larger value means the length field is garbage.
constexpr std::uint32_t kMaxHeaderLen = 1u << 24;

const char* descr_of(Dtype d) {
  switch (d) {
    case Dtype::Bool:
      return "|b1";
    case Dtype::UInt8:
      return "|u1";
    case Dtype::Int32:
      return "<i4";
    case Dtype::Int64:
      return "<i8";
    case Dtype::Float32:
      return "<f4";
    case Dtype::Float64:
      return "<f8";
  }
  return "?";
}

void byteswap_inplace(void* data, std::size_t n, std::size_t itemsize) {
  if (itemsize == 1) return;
  auto* p = static_cast<unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i, p += itemsize)
    for (std::size_t a = 0, b = itemsize - 1; a < b; ++a, --b) std::swap(p[a], p[b]);
}

std::string shape_tuple(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

// A parser for exactly the Python literals a .npy header holds: a dict of str keys whose
// values are str, True/False, or a tuple of non-negative ints.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string& descr, bool& fortran, Shape& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') {
        ++i_;
        break;
      }
      std::string key = parse_str();
      expect(':');
      if (key == "descr") {
        skip_ws();
        if (peek() != '\'' && peek() != '"')
          fail("'descr' is not a simple type string (structured arrays are not supported)");
        descr = parse_str();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = parse_bool();
        have_fortran = true;
      } else if (key == "shape") {
        shape = parse_tuple();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}');
      break;
    }
    if (!have_descr || !have_fortran || !have_shape)
      fail("the header dict lacks one of 'descr', 'fortran_order', 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw IoError("load_npy: '" + path_ + "' has a corrupt header: " + what +
                  " (header: " + s_.substr(0, 200) + ")");
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) fail(std::string("expected '") + c + "' at offset " + std::to_string(i_));
    ++i_;
  }
  std::string parse_str() {
    skip_ws();
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string at offset " + std::to_string(i_));
    const std::size_t start = ++i_;
    while (i_ < s_.size() && s_[i_] != q) ++i_;
    if (i_ >= s_.size()) fail("unterminated string");
    return s_.substr(start, i_++ - start);
  }
  bool parse_bool() {
    skip_ws();
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail("'fortran_order' is not True or False");
  }
  Shape parse_tuple() {
    expect('(');
    Shape shape;
    while (true) {
      skip_ws();
      if (peek() == ')') {
        ++i_;
        return shape;
      }
      if (!std::isdigit(static_cast<unsigned char>(peek())))
        fail("'shape' holds something other than non-negative integers");
      std::int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (v > (std::numeric_limits<std::int64_t>::max() - 9) / 10) fail("'shape' overflows");
        v = v * 10 + (s_[i_++] - '0');
      }
      // Python 2 era writers appended L to longs.
      if (peek() == 'L') ++i_;
      shape.push_back(v);
      skip_ws();
      if (peek() == ',')
        ++i_;
      else if (peek() != ')')
        fail("malformed 'shape' tuple");
    }
  }

  const std::string& s_;
  const std::string& path_;
  std::size_t i_ = 0;
};

}  // namespace

void Tensor::save_npy(const std::string& path) const {
  if (!defined()) throw ValueError("save_npy: cannot save an undefined tensor to '" + path + "'");
  std::string dict = std::string("{'descr': '") + descr_of(dtype_) +
                     "', 'fortran_order': False, 'shape': " + shape_tuple(shape_) + ", }";
  // Version 1.0 unless the header does not fit its 16-bit length (numpy's own rule).
  int major = 1;
  std::size_t prefix = kMagicLen + 2 + 2;
  std::size_t total = (prefix + dict.size() + 1 + kAlign - 1) / kAlign * kAlign;
  if (total - prefix > 0xFFFF) {
    major = 2;
    prefix = kMagicLen + 2 + 4;
    total = (prefix + dict.size() + 1 + kAlign - 1) / kAlign * kAlign;
  }
  const std::size_t header_len = total - prefix;
  dict.append(header_len - dict.size() - 1, ' ');
  dict += '\n';

  std::string head(kMagic, kMagicLen);
  head += static_cast<char>(major);
  head += '\0';
  for (std::size_t b = 0; b < (major == 1 ? 2u : 4u); ++b)
    head += static_cast<char>((header_len >> (8 * b)) & 0xFF);
  head += dict;

  Tensor c = contiguous();
  const std::size_t nbytes = static_cast<std::size_t>(numel()) * dtype_size(dtype_);
  std::vector<unsigned char> swapped;
  const void* bytes = c.raw_data();
  if constexpr (std::endian::native == std::endian::big) {
    swapped.assign(static_cast<const unsigned char*>(bytes),
                   static_cast<const unsigned char*>(bytes) + nbytes);
    byteswap_inplace(swapped.data(), static_cast<std::size_t>(numel()), dtype_size(dtype_));
    bytes = swapped.data();
  }

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    throw IoError("save_npy: cannot open '" + path + "' for writing: " + std::strerror(errno));
  out.write(head.data(), static_cast<std::streamsize>(head.size()));
  out.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(nbytes));
  out.close();
  if (!out) throw IoError("save_npy: writing '" + path + "' failed (disk full?)");
}

Tensor Tensor::load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("load_npy: cannot open '" + path + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);

  auto read_exact = [&](void* dst, std::size_t n, const char* what) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (static_cast<std::size_t>(in.gcount()) != n)
      throw IoError("load_npy: '" + path + "' is truncated: " + what + " needs " +
                    std::to_string(n) + " bytes but the file ends after " +
                    std::to_string(in.gcount()) + " (file size " + std::to_string(file_size) +
                    " bytes)");
  };

  unsigned char pre[kMagicLen + 2];
  if (file_size < sizeof pre)
    throw IoError("load_npy: '" + path + "' is not a .npy file: only " + std::to_string(file_size) +
                  " bytes, too short for the header");
  read_exact(pre, sizeof pre, "the magic string");
  if (std::memcmp(pre, kMagic, kMagicLen) != 0)
    throw IoError("load_npy: '" + path + "' is not a .npy file (bad magic string)");
  const int major = pre[6], minor = pre[7];
  if (major < 1 || major > 3)
    throw IoError("load_npy: '" + path + "' has unsupported .npy format version " +
                  std::to_string(major) + "." + std::to_string(minor) +
                  " (supported: 1.0, 2.0, 3.0)");
  std::uint32_t header_len = 0;
  unsigned char lenbuf[4] = {0, 0, 0, 0};
  const std::size_t lensize = major == 1 ? 2 : 4;
  read_exact(lenbuf, lensize, "the header length");
  for (std::size_t b = 0; b < lensize; ++b) header_len |= std::uint32_t{lenbuf[b]} << (8 * b);
  if (header_len > kMaxHeaderLen)
    throw IoError("load_npy: '" + path + "' has a corrupt header length " +
                  std::to_string(header_len));
  std::string header(header_len, '\0');
  read_exact(header.data(), header_len, "the header");

  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(header, path).parse(descr, fortran, shape);

  Dtype dtype;
  bool swap = false;
  {
    if (descr.size() != 3)
      throw IoError("load_npy: '" + path + "' holds unsupported dtype '" + descr +
                    "' (supported: <f4 <f8 <i4 <i8 |u1 |b1)");
    const char order = descr[0];
    const std::string code = descr.substr(1);
    if (code == "f4")
      dtype = Dtype::Float32;
    else if (code == "f8")
      dtype = Dtype::Float64;
    else if (code == "i4")
      dtype = Dtype::Int32;
    else if (code == "i8")
      dtype = Dtype::Int64;
    else if (code == "u1")
      dtype = Dtype::UInt8;
    else if (code == "b1")
      dtype = Dtype::Bool;
    else
      throw IoError("load_npy: '" + path + "' holds unsupported dtype '" + descr +
                    "' (supported: <f4 <f8 <i4 <i8 |u1 |b1)");
    const bool file_little = order == '<' || order == '|' ||
                             (order == '=' && std::endian::native == std::endian::little);
    if (order != '<' && order != '>' && order != '|' && order != '=')
      throw IoError("load_npy: '" + path + "' has a corrupt dtype '" + descr + "'");
    swap = dtype_size(dtype) > 1 && file_little != (std::endian::native == std::endian::little);
  }

  // Validate sizes before allocating, so a corrupt shape cannot ask for absurd memory.
  const std::uint64_t itemsize = dtype_size(dtype);
  std::uint64_t count = 1;
  for (auto d : shape) {
    if (d != 0 && count > std::numeric_limits<std::uint64_t>::max() / itemsize / d)
      throw IoError("load_npy: '" + path + "' has a corrupt shape " + shape_str(shape));
    count *= static_cast<std::uint64_t>(d);
  }
  const std::uint64_t data_bytes = count * itemsize;
  const std::uint64_t data_start = kMagicLen + 2 + lensize + header_len;
  if (file_size - data_start < data_bytes)
    throw IoError("load_npy: '" + path + "' is truncated: shape " + shape_str(shape) + " of " +
                  dtype_name(dtype) + " needs " + std::to_string(data_bytes) +
                  " data bytes but only " + std::to_string(file_size - data_start) +
                  " follow the header");

  Shape stored = shape;
  if (fortran) stored.assign(shape.rbegin(), shape.rend());
  Tensor t = empty(stored, dtype);
  read_exact(t.raw_data(), data_bytes, "the array data");
  if (swap) byteswap_inplace(t.raw_data(), count, itemsize);
  if (dtype == Dtype::Bool) {
    // Any nonzero byte is true; normalising keeps every bool a valid 0/1 object.
    auto* p = static_cast<unsigned char*>(t.raw_data());
    for (std::uint64_t i = 0; i < count; ++i) p[i] = p[i] != 0;
  }
  if (!fortran) return t;
  std::vector<int> axes(shape.size());
  for (std::size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int>(axes.size() - 1 - i);
  return t.permute(axes).contiguous();
}

}  // namespace thea
