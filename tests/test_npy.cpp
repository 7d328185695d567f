// NumPy .npy files: round trips for every dtype, hand-built files for versions, Fortran
// order and byte order, corrupt files, and interoperability with real numpy when present.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "thea/tensor.hpp"

using namespace thea;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test case, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("thea_test_npy_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A .npy file built by hand: version, dict text and raw data bytes as given.
std::string make_npy(int major, const std::string& dict, const std::string& data) {
  std::string h = dict;
  const std::size_t prefix = 8 + (major == 1 ? 2 : 4);
  while ((prefix + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out = std::string("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (int b = 0; b < (major == 1 ? 2 : 4); ++b)
    out += static_cast<char>((h.size() >> (8 * b)) & 0xFF);
  return out + h + data;
}

template <class T>
std::string le_bytes(const std::vector<T>& v) {
  std::string s(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  return s;  // the test hosts are little-endian; checked below
}

// A python3 that can import numpy, or empty.
std::string find_numpy_python() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("THEA_PYTHON")) candidates.push_back(env);
  candidates.push_back("python3");
  candidates.push_back("/usr/bin/python3");
  for (const auto& py : candidates)
    if (std::system((py + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0) return py;
  return {};
}

}  // namespace

TEST_CASE("round trip for every dtype and shape") {
  TempDir dir;
  const std::vector<Dtype> dtypes = {Dtype::Bool,  Dtype::UInt8,   Dtype::Int32,
                                     Dtype::Int64, Dtype::Float32, Dtype::Float64};
  const std::vector<Shape> shapes = {{}, {5}, {3, 4}, {2, 3, 4}, {0, 3}, {1, 1, 1, 2}};
  for (Dtype d : dtypes)
    for (const auto& s : shapes) {
      CAPTURE(dtype_name(d));
      CAPTURE(shape_str(s));
      Tensor t = Tensor::random_uniform(s, 0, 2, 11, Dtype::Float64).astype(d);
      if (d == Dtype::Float32 || d == Dtype::Float64) t = Tensor::random_normal(s, 0, 100, 12, d);
      const std::string p = dir.file("a.npy");
      t.save_npy(p);
      const std::string bytes = read_bytes(p);
      REQUIRE(bytes.size() >= 64);
      CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
      const std::size_t header_end =
          10 + static_cast<unsigned char>(bytes[8]) + 256 * static_cast<unsigned char>(bytes[9]);
      CHECK(header_end % 64 == 0);  // data aligned as numpy requires
      CHECK(bytes[header_end - 1] == '\n');
      CHECK(bytes.size() == header_end + t.numel() * dtype_size(d));
      Tensor back = Tensor::load_npy(p);
      CHECK(back.dtype() == d);
      CHECK(back.shape() == s);
      CHECK(back.to_vector() == t.to_vector());
    }
}

TEST_CASE("saving a non-contiguous view writes its logical order") {
  TempDir dir;
  auto m = Tensor::arange(12, Dtype::Int32).reshape({3, 4});
  m.permute({1, 0}).slice(0, 1, 4, 2).save_npy(dir.file("v.npy"));  // m.T[1:4:2]
  auto back = Tensor::load_npy(dir.file("v.npy"));
  CHECK(back.shape() == Shape{2, 3});
  CHECK(back.to_vector() == std::vector<double>{1, 5, 9, 3, 7, 11});
  const std::string bytes = read_bytes(dir.file("v.npy"));
  CHECK(bytes.find("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }") ==
        std::size_t{10});
}

TEST_CASE("hand-built files: versions, Fortran order, byte order, bool bytes") {
  TempDir dir;
  const std::string p = dir.file("h.npy");
  // Version 2.0 and 3.0 use a 4-byte header length.
  for (int major : {2, 3}) {
    write_bytes(p, make_npy(major, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                            le_bytes(std::vector<double>{1.5, -2.5})));
    CHECK(Tensor::load_npy(p).to_vector() == std::vector<double>{1.5, -2.5});
  }
  // Fortran order: memory holds columns first; [[1,2,3],[4,5,6]] is stored 1 4 2 5 3 6.
  write_bytes(p, make_npy(1, "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }",
                          le_bytes(std::vector<std::int64_t>{1, 4, 2, 5, 3, 6})));
  auto f = Tensor::load_npy(p);
  CHECK(f.shape() == Shape{2, 3});
  CHECK(f.is_contiguous());
  CHECK(f.to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  // Big-endian data is byte-swapped.
  write_bytes(p, make_npy(1, "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }",
                          std::string("\x00\x00\x01\x02\xff\xff\xff\xfe", 8)));
  CHECK(Tensor::load_npy(p).to_vector() == std::vector<double>{258, -2});
  // Key order and spacing vary between writers; Python-2 longs carry an L.
  write_bytes(p, make_npy(1, "{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"|u1\"}",
                          std::string("\x07\xff", 2)));
  auto u = Tensor::load_npy(p);
  CHECK(u.shape() == Shape{1, 2});
  CHECK(u.to_vector() == std::vector<double>{7, 255});
  // Any nonzero byte is true.
  write_bytes(p, make_npy(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }",
                          std::string("\x00\x02\x01", 3)));
  CHECK(Tensor::load_npy(p).to_vector() == std::vector<double>{0, 1, 1});
  // A scalar.
  write_bytes(p, make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                          le_bytes(std::vector<float>{0.25f})));
  auto s = Tensor::load_npy(p);
  CHECK(s.ndim() == 0);
  CHECK(s.item<float>() == 0.25f);
}

TEST_CASE("corrupt, truncated and missing files give IoError naming the file") {
  TempDir dir;
  const std::string p = dir.file("bad.npy");
  const std::string good = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                                    le_bytes(std::vector<float>{1, 2, 3, 4}));
  auto check_error = [&](const std::string& bytes, const std::string& needle) {
    write_bytes(p, bytes);
    CAPTURE(needle);
    CHECK_THROWS_AS(Tensor::load_npy(p), IoError);
    CHECK_THROWS_WITH(Tensor::load_npy(p), doctest::Contains(p.c_str()));
    CHECK_THROWS_WITH(Tensor::load_npy(p), doctest::Contains(needle.c_str()));
  };
  write_bytes(p, good);
  CHECK(Tensor::load_npy(p).numel() == 4);

  CHECK_THROWS_AS(Tensor::load_npy(dir.file("nope.npy")), IoError);
  CHECK_THROWS_WITH(Tensor::load_npy(dir.file("nope.npy")),
                    doctest::Contains("No such file or directory"));
  check_error("", "too short");
  check_error("PK\x03\x04 this is a zip file", "bad magic");
  std::string v9 = good;
  v9[6] = 9;
  check_error(v9, "version 9.0");
  check_error(good.substr(0, 40), "truncated");               // header cut
  check_error(good.substr(0, good.size() - 1), "truncated");  // data cut
  check_error(good.substr(0, good.size() - 1), "needs 16 data bytes");
  check_error(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", "12345678"),
              "unsupported dtype '<f2'");
  check_error(
      make_npy(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "1234"),
      "structured");
  check_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", ""),
              "non-negative");
  check_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False}", ""), "lacks");
  check_error(make_npy(1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4,), }", ""),
              "True or False");
  check_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", ""),
              "unexpected key 'x'");
  check_error(make_npy(1, "['descr', '<f4']", ""), "expected '{'");
  check_error(make_npy(1,
                       "{'descr': '<f8', 'fortran_order': False, 'shape': "
                       "(4294967296, 4294967296, 4294967296), }",
                       ""),
              "corrupt shape");
  std::string huge_len = good;
  huge_len[6] = 2;  // reinterpret the 1.0 header length field as 2.0's 4 bytes
  check_error(huge_len, "header");

  CHECK_THROWS_AS(Tensor().save_npy(dir.file("u.npy")), ValueError);
  CHECK_THROWS_AS(Tensor::zeros({2}).save_npy(dir.file("no/such/dir/x.npy")), IoError);
  CHECK_THROWS_WITH(Tensor::zeros({2}).save_npy(dir.file("no/such/dir/x.npy")),
                    doctest::Contains("no/such/dir/x.npy"));
}

TEST_CASE("interoperability with numpy (skipped without python3 + numpy)") {
  const std::string py = find_numpy_python();
  if (py.empty()) {
    MESSAGE("skipping: no python3 with numpy found (set THEA_PYTHON to choose one)");
    return;
  }
  TempDir dir;
  // thea -> numpy: numpy must read every dtype with the exact values.
  Tensor::from_list({{1.5, -2}, {3, 4.25}}, Dtype::Float32).save_npy(dir.file("f4.npy"));
  Tensor::from_list({1e300, -0.1}, Dtype::Float64).save_npy(dir.file("f8.npy"));
  Tensor::arange(6, Dtype::Int32).reshape({1, 2, 3}).save_npy(dir.file("i4.npy"));
  Tensor::from_list({-(1LL << 40), 7}, Dtype::Int64).save_npy(dir.file("i8.npy"));
  Tensor::from_list({0, 255, 128}, Dtype::UInt8).save_npy(dir.file("u1.npy"));
  Tensor::from_list({1, 0, 1}, Dtype::Bool).save_npy(dir.file("b1.npy"));
  Tensor::scalar(2.5, Dtype::Float64).save_npy(dir.file("s.npy"));
  Tensor::arange(12, Dtype::Float32).reshape({3, 4}).permute({1, 0}).save_npy(dir.file("t.npy"));

  const std::string check_script = dir.file("check.py");
  write_bytes(check_script, R"PY(
import sys, numpy as np
d = sys.argv[1]
def same(name, expected):
    a = np.load(d + '/' + name)
    e = np.asarray(expected)
    assert a.dtype == e.dtype, (name, a.dtype, e.dtype)
    assert a.shape == e.shape, (name, a.shape, e.shape)
    assert np.array_equal(a, e), (name, a, e)
same('f4.npy', np.array([[1.5, -2], [3, 4.25]], np.float32))
same('f8.npy', np.array([1e300, -0.1], np.float64))
same('i4.npy', np.arange(6, dtype=np.int32).reshape(1, 2, 3))
same('i8.npy', np.array([-(1 << 40), 7], np.int64))
same('u1.npy', np.array([0, 255, 128], np.uint8))
same('b1.npy', np.array([True, False, True]))
same('s.npy', np.float64(2.5))
same('t.npy', np.arange(12, dtype=np.float32).reshape(3, 4).T)
# numpy -> thea: C order, Fortran order, version 2.0, big-endian, every dtype.
np.save(d + '/np_c.npy', np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 8)
np.save(d + '/np_f.npy', np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)))
with open(d + '/np_v2.npy', 'wb') as f:
    np.lib.format.write_array(f, np.array([[1, 2], [3, 4]], np.int32), version=(2, 0))
np.save(d + '/np_be.npy', np.array([1.25, -3.5], dtype='>f4'))
np.save(d + '/np_b.npy', np.array([[True, False], [False, True]]))
np.save(d + '/np_u.npy', np.array([3, 250], np.uint8))
print('numpy-ok')
)PY");
  const std::string cmd = py + " " + check_script + " " + dir.path.string() + " 2>&1";
  std::string output;
  if (FILE* pipe = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, pipe)) output += buf;
    ::pclose(pipe);
  }
  INFO(output);
  REQUIRE(output.find("numpy-ok") != std::string::npos);

  auto c = Tensor::load_npy(dir.file("np_c.npy"));
  CHECK(c.dtype() == Dtype::Float64);
  CHECK(c.shape() == Shape{2, 3, 4});
  CHECK(c.get({1, 2, 3}) == 23.0 / 8);
  auto f = Tensor::load_npy(dir.file("np_f.npy"));
  CHECK(f.shape() == Shape{3, 4});
  CHECK(f.to_vector() == Tensor::arange(12).to_vector());
  auto v2 = Tensor::load_npy(dir.file("np_v2.npy"));
  CHECK(v2.dtype() == Dtype::Int32);
  CHECK(v2.to_vector() == std::vector<double>{1, 2, 3, 4});
  auto be = Tensor::load_npy(dir.file("np_be.npy"));
  CHECK(be.dtype() == Dtype::Float32);
  CHECK(be.to_vector() == std::vector<double>{1.25, -3.5});
  auto b = Tensor::load_npy(dir.file("np_b.npy"));
  CHECK(b.dtype() == Dtype::Bool);
  CHECK(b.to_vector() == std::vector<double>{1, 0, 0, 1});
  CHECK(Tensor::load_npy(dir.file("np_u.npy")).to_vector() == std::vector<double>{3, 250});
}
