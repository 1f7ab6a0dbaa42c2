// Unit tests for model/safetensors: writer/reader round trips, on-disk layout, and every malformed
// header the reader must reject with an Error naming the file and tensor. Interop with files
// written by the Python safetensors package is tested in tests/reference, not here.
#include "model/safetensors.h"

#include <ATen/ATen.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <optional>

#include "common/check.h"
#include "tests/test_support.h"

namespace longtune::model {
namespace {

using longtune::testing::expect_error;
using longtune::testing::read_bytes;

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "safetensors_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  // Flat cleanup by hand: fs::remove_all resolves to a broken copy exported by libtorch.so.
  void TearDown() override {
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") ::unlink((dir_ / n).c_str());
      }
      ::closedir(d);
    }
    ::rmdir(dir_.c_str());
  }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a raw file: u64 LE header length, the header text, then `buffer`.
  std::string write_raw(const std::string& name, const std::string& header,
                        const std::string& buffer = "", std::optional<uint64_t> len = {}) {
    const uint64_t n = len.value_or(header.size());
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>(n >> (8 * i)));
    bytes += header + buffer;
    return write_file(name, bytes);
  }
  std::string write_file(const std::string& name, const std::string& bytes) {
    const std::string path = file(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  // Expects opening a raw file with this header/buffer to fail naming the file and `parts`.
  void expect_bad(const std::string& header, const std::string& buffer,
                  std::initializer_list<std::string> parts) {
    const std::string path =
        write_raw("bad" + std::to_string(count_++) + ".safetensors", header, buffer);
    std::vector<std::string> all(parts);
    all.push_back(path);
    try {
      SafetensorsFile f(path);
      ADD_FAILURE() << "did not throw for header " << header;
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const auto& p : all)
        EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
  }

  fs::path dir_;
  int count_ = 0;
};

TEST_F(SafetensorsTest, RoundTripDtypesAndMetadata) {
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> in = {
      {"f32", at::randn({3, 5})},
      {"bf16", at::randn({7}).to(at::kBFloat16)},
      {"f16", at::randn({2, 3}).to(at::kHalf)},
      {"i64", at::arange(-5, 6, at::kLong)},
      {"u8", at::arange(0, 250, at::kByte)},
      {"bool", at::tensor({1, 0, 1}).to(at::kBool)},
      {"scalar", at::scalar_tensor(3.5, at::kDouble)},
      {"empty", at::empty({0, 4}, at::kFloat)},
      {"large", at::randn({1024, 512})},
      {"i8.t", at::arange(-6, 6, at::kChar).reshape({3, 4}).t()},  // non-contiguous
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "12"}};
  const std::string path = file("rt.safetensors");
  save_safetensors(path, in, meta);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.file_size(), fs::file_size(path));
  ASSERT_EQ(f.tensors().size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(f.contains(name)) << name;
    const at::Tensor got = f.tensor(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(got, t.contiguous())) << name;
    EXPECT_EQ(f.info(name).dtype, t.scalar_type());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got.data_ptr()) % got.element_size(), 0u) << name;
  }
  EXPECT_EQ(f.tensor("scalar").dim(), 0);
  EXPECT_FALSE(f.contains("missing"));
  // tensors() is in offset order and tiles the buffer; the writer orders by alignment then name.
  uint64_t off = 0;
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(t.begin, off);
    off = t.end;
  }
  EXPECT_EQ(off, f.file_size() - f.data_offset());
  // Reference order: descending dtype rank (I64 > F64 > F32 > F16... > U8 > BOOL), then name.
  std::vector<std::string> order;
  for (const auto& t : f.tensors()) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"i64", "scalar", "empty", "f32", "large", "bf16",
                                             "f16", "i8.t", "u8", "bool"}));
}

TEST_F(SafetensorsTest, HeaderLayoutIsPaddedJson) {
  const std::string path = file("layout.safetensors");
  save_safetensors(path, {{"w", at::ones({3}, at::kHalf)}}, {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 9u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(bytes.size(), 8 + n + 6);
  const std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find("\"__metadata__\":{\"k\":\"v\"}"), std::string::npos) << header;
  EXPECT_NE(header.find("\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]}"),
            std::string::npos)
      << header;
  // Overwrite is atomic: a second save replaces the file and leaves no .tmp behind.
  save_safetensors(path, {{"w", at::zeros({2}, at::kFloat)}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_TRUE(SafetensorsFile(path).metadata().empty());
  EXPECT_EQ(SafetensorsFile(path).info("w").dtype, at::kFloat);
}

// Byte-exact against the reference implementation's own serialization test vectors.
TEST_F(SafetensorsTest, BytesMatchReferenceWriter) {
  const auto le64 = [](uint64_t n) {
    std::string s;
    for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(n >> (8 * i)));
    return s;
  };
  const at::Tensor data = at::arange(6, at::kFloat);
  const std::string floats(static_cast<const char*>(data.const_data_ptr()), 24);

  const std::string a = file("a.safetensors");
  save_safetensors(a, {{"attn.0", data.reshape({1, 2, 3})}});
  EXPECT_EQ(
      read_bytes(a),
      le64(64) + R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})" + floats);

  const std::string b = file("b.safetensors");
  save_safetensors(b, {{"attn0", data.reshape({1, 1, 2, 3})}});
  EXPECT_EQ(read_bytes(b),
            le64(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" +
                std::string(7, ' ') + floats);

  const std::string c = file("c.safetensors");
  save_safetensors(c, {});
  EXPECT_EQ(read_bytes(c), le64(8) + "{}      ");
  save_safetensors(c, {}, {{"framework", "pt"}});
  EXPECT_EQ(read_bytes(c),
            le64(40) + R"({"__metadata__":{"framework":"pt"}})" + std::string(5, ' '));
}

TEST_F(SafetensorsTest, TensorsAreZeroCopyAndOutliveTheFile) {
  const std::string path = file("zc.safetensors");
  save_safetensors(path, {{"a", at::arange(16, at::kFloat)}});
  at::Tensor t;
  {
    SafetensorsFile f(path);
    t = f.tensor("a");
    EXPECT_EQ(f.tensor("a").data_ptr(), t.data_ptr());  // both view the mapping
  }
  EXPECT_TRUE(at::equal(t, at::arange(16, at::kFloat)));
}

TEST_F(SafetensorsTest, MisalignedDataIsCopied) {
  // U8 of 1 byte at 0, then F32 at offset 1: header length 8 makes the F32 start misaligned.
  std::string h =
      R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"f":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  h.append((8 - h.size() % 8) % 8, ' ');
  const float v = 2.5f;
  std::string buf(1, '\x07');
  buf.append(reinterpret_cast<const char*>(&v), 4);
  SafetensorsFile f(write_raw("mis.safetensors", h, buf));
  const at::Tensor t = f.tensor("f");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4, 0u);
  EXPECT_EQ(t.item<float>(), 2.5f);
  EXPECT_EQ(f.tensor("b").item<uint8_t>(), 7);
}

TEST_F(SafetensorsTest, EmptyBufferAndNoTensors) {
  SafetensorsFile a(write_raw("none.safetensors", "{}"));
  EXPECT_TRUE(a.tensors().empty());
  SafetensorsFile b(
      write_raw("zero.safetensors", R"({"e":{"dtype":"BF16","shape":[0],"data_offsets":[0,0]}})"));
  EXPECT_EQ(b.tensor("e").numel(), 0);
}

TEST_F(SafetensorsTest, RejectsBadFiles) {
  expect_error([&] { SafetensorsFile f(file("absent.safetensors")); }, {"absent.safetensors"});
  expect_error([&] { SafetensorsFile f(dir_.string()); }, {dir_.string(), "regular"});
  const std::string shorty = write_file("short.safetensors", "abcde");
  expect_error([&] { SafetensorsFile f(shorty); }, {shorty, "shorter"});
  const std::string empty = write_file("empty.safetensors", "");
  expect_error([&] { SafetensorsFile f(empty); }, {empty});
  const std::string huge = write_raw("huge.safetensors", "{}", "", 100ULL * 1000 * 1000 + 1);
  expect_error([&] { SafetensorsFile f(huge); }, {huge, "limit"});
  const std::string past = write_raw("past.safetensors", "{}", "", 3);
  expect_error([&] { SafetensorsFile f(past); }, {past, "past the end"});
}

TEST_F(SafetensorsTest, RejectsMalformedHeaders) {
  const std::string buf16(16, '\0');
  expect_bad("{\"a\":", "", {"not valid JSON"});
  expect_bad("[1,2]", "", {"not an object"});
  expect_bad(std::string("{\"a\xff\":1}"), "", {"not valid JSON"});  // invalid UTF-8
  expect_bad(R"({"t":5})", "", {"'t'", "not an object"});
  expect_bad(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", "", {"'t'", "dtype"});
  expect_bad(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", "", {"'t'", "shape"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[1]}})", "", {"'t'", "data_offsets"});
  expect_bad(R"({"t":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "", {"'t'", "dtype"});
  expect_bad(R"({"t":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "", {"'t'", "shape"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", "", {"'t'", "shape"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "",
             {"'t'", "data_offsets"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}})", "",
             {"'t'", "data_offsets"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", "",
             {"'t'", "data_offsets"});
  expect_bad(R"({"t":{"dtype":"F4","shape":[1],"data_offsets":[0,4]}})", "",
             {"'t'", "unknown", "F4"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "", {"'t'", "shape"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", buf16,
             {"'t'", "begin > end"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", buf16, {"'t'", "span"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", buf16,
             {"'t'", "too large"});
  expect_bad(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", buf16,
             {"'t'", "span"});  // numel * 4 overflows uint64
  expect_bad(R"({"t":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", buf16,
             {"'t'", "past the end"});
  expect_bad(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      std::string(12, '\0'), {"'b'", "overlap", "'a'"});
  expect_bad(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
      std::string(12, '\0'), {"'b'", "gap"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'),
             {"'a'", "gap"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0'),
             {"trailing"});
  expect_bad(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      std::string(4, '\0'), {"duplicate", "'a'"});
  expect_bad(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
             std::string(4, '\0'), {"duplicate", "'dtype'"});
  expect_bad(R"({"__metadata__":[1]})", "", {"__metadata__"});
  expect_bad(R"({"__metadata__":{"k":1}})", "", {"__metadata__", "'k'"});
}

TEST_F(SafetensorsTest, BadBoolDataAndAbsentTensor) {
  const std::string path = write_raw(
      "bool.safetensors", R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x02");
  SafetensorsFile f(path);
  expect_error([&] { f.tensor("m"); }, {path, "'m'", "0/1"});
  expect_error([&] { f.info("nope"); }, {path, "'nope'"});
  expect_error([&] { f.tensor("nope"); }, {path, "'nope'"});
}

TEST_F(SafetensorsTest, DtypeNamesAndWriterErrors) {
  for (const auto& name : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                           "I32", "U32", "F32", "F64", "I64", "U64"}) {
    EXPECT_EQ(safetensors_dtype_name(safetensors_dtype_from_name(name, "test")), name);
  }
  EXPECT_EQ(safetensors_dtype_from_name("F8_E4M3", "x"), at::kFloat8_e4m3fn);
  EXPECT_EQ(safetensors_dtype_from_name("U32", "x"), at::kUInt32);
  expect_error([] { safetensors_dtype_from_name("C64", "ctx-string"); }, {"ctx-string", "C64"});
  expect_error([] { safetensors_dtype_name(at::kComplexFloat); }, {"not supported"});
  const std::string path = file("w.safetensors");
  expect_error(
      [&] {
        save_safetensors(path, {{"a", at::ones({1})}, {"a", at::ones({1})}});
      },
      {path, "duplicate", "'a'"});
  expect_error(
      [&] {
        save_safetensors(path, {{"c", at::ones({1}, at::kComplexFloat)}});
      },
      {"not supported"});
  expect_error(
      [&] {
        save_safetensors(path, {{"__metadata__", at::ones({1})}});
      },
      {path, "__metadata__"});
  expect_error(
      [&] {
        save_safetensors(file("no/such/dir.safetensors"), {{"a", at::ones({1})}});
      },
      {"no/such/dir.safetensors"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

}  // namespace
}  // namespace longtune::model
