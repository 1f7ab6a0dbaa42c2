// safetensors reader (mmap + full header validation) and atomic writer. Every malformed input is a
// longtune::Error naming the file (and tensor); all reads are bounds-checked and all size
// arithmetic is overflow-checked. No sharding or HF naming here (see hf_checkpoint.cpp).
#include "model/safetensors.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "common/check.h"

namespace longtune::model {

namespace detail {

// Owns one mmap of a whole file; unmapped when the last SafetensorsFile or tensor view goes away.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  Mapping(void* a, size_t s) : addr(a), size(s) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(addr, size); }
  const char* bytes() const { return static_cast<const char*>(addr); }
};

}  // namespace detail

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ULL * 1000 * 1000;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeName {
  const char* name;
  c10::ScalarType dtype;
};

// In the reference implementation's Dtype enum order, which is ascending alignment.
constexpr std::array<DtypeName, 15> kDtypes = {{
    {"BOOL", c10::ScalarType::Bool},
    {"U8", c10::ScalarType::Byte},
    {"I8", c10::ScalarType::Char},
    {"F8_E5M2", c10::ScalarType::Float8_e5m2},
    {"F8_E4M3", c10::ScalarType::Float8_e4m3fn},
    {"I16", c10::ScalarType::Short},
    {"U16", c10::ScalarType::UInt16},
    {"F16", c10::ScalarType::Half},
    {"BF16", c10::ScalarType::BFloat16},
    {"I32", c10::ScalarType::Int},
    {"U32", c10::ScalarType::UInt32},
    {"F32", c10::ScalarType::Float},
    {"F64", c10::ScalarType::Double},
    {"I64", c10::ScalarType::Long},
    {"U64", c10::ScalarType::UInt64},
}};

// Position in kDtypes (the reference's Dtype enum order); the dtype must be supported.
size_t dtype_rank(c10::ScalarType dtype) {
  for (size_t i = 0; i < kDtypes.size(); ++i) {
    if (kDtypes[i].dtype == dtype) return i;
  }
  return kDtypes.size();
}

std::string errno_text() { return std::strerror(errno); }

// Closes an fd on scope exit unless released.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

// Non-negative int64 from a JSON number; false for floats, negatives and values past INT64_MAX.
bool json_to_u63(const nlohmann::json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = i;
    return true;
  }
  return false;
}

// Parses JSON, turning duplicate object keys (which nlohmann silently collapses) into an error.
nlohmann::json parse_json_strict(const char* begin, const char* end, const std::string& where) {
  std::vector<std::set<std::string>> seen;
  std::string duplicate;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      seen.emplace_back();
    } else if (event == E::object_end) {
      if (!seen.empty()) seen.pop_back();
    } else if (event == E::key && !seen.empty() && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(begin, end, callback, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("{}: header is not valid JSON: {}", where, e.what());
  }
  LT_CHECK(duplicate.empty(), "{}: header has duplicate key '{}'", where, duplicate);
  return j;
}

}  // namespace

std::string safetensors_dtype_name(c10::ScalarType dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  LT_FAIL("dtype {} is not supported by safetensors", c10::toString(dtype));
}

c10::ScalarType safetensors_dtype_from_name(const std::string& name, const std::string& context) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  LT_FAIL("{}: unknown safetensors dtype '{}'", context, name);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string where = fmt::format("safetensors file '{}'", path);
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  LT_CHECK(fd.fd >= 0, "{}: cannot open: {}", where, errno_text());
  struct stat st {};
  LT_CHECK(::fstat(fd.fd, &st) == 0, "{}: fstat failed: {}", where, errno_text());
  LT_CHECK(S_ISREG(st.st_mode), "{}: not a regular file", where);
  file_size_ = static_cast<uint64_t>(st.st_size);
  LT_CHECK(file_size_ >= 8, "{}: file is {} bytes, shorter than the 8-byte header length", where,
           file_size_);
  void* addr = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  LT_CHECK(addr != MAP_FAILED, "{}: mmap of {} bytes failed: {}", where, file_size_, errno_text());
  mapping_ = std::make_shared<detail::Mapping>(addr, file_size_);

  const auto* b = reinterpret_cast<const unsigned char*>(mapping_->bytes());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | b[i];  // little-endian u64
  LT_CHECK(header_len <= kMaxHeaderBytes, "{}: header length {} exceeds the {}-byte limit", where,
           header_len, kMaxHeaderBytes);
  LT_CHECK(header_len <= file_size_ - 8,
           "{}: header length {} runs past the end of the {}-byte file", where, header_len,
           file_size_);
  data_offset_ = 8 + header_len;
  parse_header(mapping_->bytes() + 8, header_len);
}

void SafetensorsFile::parse_header(const char* header, uint64_t header_len) {
  const std::string where = fmt::format("safetensors file '{}'", path_);
  const nlohmann::json j = parse_json_strict(header, header + header_len, where);
  LT_CHECK(j.is_object(), "{}: header is a JSON {}, not an object", where, j.type_name());
  const uint64_t buffer_size = file_size_ - data_offset_;

  for (const auto& [name, entry] : j.items()) {
    if (name == kMetadataKey) {
      LT_CHECK(entry.is_object(), "{}: __metadata__ is a JSON {}, not an object", where,
               entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        LT_CHECK(value.is_string(), "{}: __metadata__ value for '{}' is a JSON {}, not a string",
                 where, key, value.type_name());
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string at = fmt::format("{}: tensor '{}'", where, name);
    LT_CHECK(entry.is_object(), "{}: entry is a JSON {}, not an object", at, entry.type_name());
    TensorInfo info;
    info.name = name;

    auto dtype_it = entry.find("dtype");
    LT_CHECK(dtype_it != entry.end(), "{}: missing 'dtype'", at);
    LT_CHECK(dtype_it->is_string(), "{}: 'dtype' is a JSON {}, not a string", at,
             dtype_it->type_name());
    info.dtype = safetensors_dtype_from_name(dtype_it->get<std::string>(), at);

    auto shape_it = entry.find("shape");
    LT_CHECK(shape_it != entry.end(), "{}: missing 'shape'", at);
    LT_CHECK(shape_it->is_array(), "{}: 'shape' is a JSON {}, not an array", at,
             shape_it->type_name());
    // numel is checked with zero dims counted as 1, so no shape can overflow int64 anywhere later.
    uint64_t numel = 1;
    uint64_t bounded = 1;
    for (const auto& dim : *shape_it) {
      int64_t d = 0;
      LT_CHECK(json_to_u63(dim, &d), "{}: shape {} has a dimension that is not an integer >= 0", at,
               shape_it->dump());
      info.shape.push_back(d);
      numel *= static_cast<uint64_t>(d);  // numel <= bounded, so the check below covers it
      const uint64_t factor = d == 0 ? 1 : static_cast<uint64_t>(d);
      const bool ok = !__builtin_mul_overflow(bounded, factor, &bounded);
      LT_CHECK(ok && bounded <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
               "{}: shape {} is too large", at, shape_it->dump());
    }

    auto off_it = entry.find("data_offsets");
    LT_CHECK(off_it != entry.end(), "{}: missing 'data_offsets'", at);
    int64_t begin = 0, end = 0;
    LT_CHECK(off_it->is_array() && off_it->size() == 2 && json_to_u63((*off_it)[0], &begin) &&
                 json_to_u63((*off_it)[1], &end),
             "{}: 'data_offsets' {} is not a pair of integers >= 0", at, off_it->dump());
    info.begin = static_cast<uint64_t>(begin);
    info.end = static_cast<uint64_t>(end);
    LT_CHECK(info.begin <= info.end, "{}: data_offsets [{}, {}] have begin > end", at, info.begin,
             info.end);
    uint64_t nbytes = 0;
    LT_CHECK(!__builtin_mul_overflow(numel, c10::elementSize(info.dtype), &nbytes) &&
                 nbytes == info.end - info.begin,
             "{}: shape {} of {} needs {} elements but data_offsets [{}, {}] span {} bytes", at,
             shape_it->dump(), safetensors_dtype_name(info.dtype), numel, info.begin, info.end,
             info.end - info.begin);
    LT_CHECK(info.end <= buffer_size,
             "{}: data_offsets [{}, {}] run past the end of the {}-byte data buffer", at,
             info.begin, info.end, buffer_size);
    tensors_.push_back(std::move(info));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t expected = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    if (t.begin != expected) {
      LT_CHECK(t.begin >= expected, "{}: tensor '{}': data_offsets [{}, {}] overlap tensor '{}'",
               where, t.name, t.begin, t.end, tensors_[i - 1].name);
      LT_FAIL("{}: tensor '{}': data_offsets [{}, {}] leave a gap: expected begin {}", where,
              t.name, t.begin, t.end, expected);
    }
    expected = t.end;
    index_.emplace(t.name, i);
  }
  LT_CHECK(expected == buffer_size,
           "{}: tensors cover {} bytes but the data buffer has {} bytes (trailing data)", where,
           expected, buffer_size);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  LT_CHECK(it != index_.end(), "safetensors file '{}': no tensor '{}'", path_, name);
  return tensors_[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const auto options = at::TensorOptions().dtype(ti.dtype).device(at::kCPU);
  const uint64_t nbytes = ti.end - ti.begin;
  if (nbytes == 0) return at::empty(ti.shape, options);
  const char* data = mapping_->bytes() + data_offset_ + ti.begin;
  if (ti.dtype == at::kBool) {
    const bool valid = std::all_of(data, data + nbytes, [](char c) { return c == 0 || c == 1; });
    LT_CHECK(valid, "safetensors file '{}': tensor '{}': BOOL data holds bytes other than 0/1",
             path_, name);
  }
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(ti.dtype) != 0) {
    at::Tensor copy = at::empty(ti.shape, options);
    std::memcpy(copy.data_ptr(), data, nbytes);
    return copy;
  }
  std::shared_ptr<detail::Mapping> keep = mapping_;
  return at::from_blob(
      const_cast<char*>(data), ti.shape, [keep](void*) mutable { keep.reset(); }, options);
}

FileDigest save_safetensors(const std::string& path,
                            const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                            const std::map<std::string, std::string>& metadata, bool sync_directory) {
  const std::string where = fmt::format("safetensors file '{}'", path);
  std::vector<std::pair<std::string, at::Tensor>> items;
  items.reserve(tensors.size());
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    LT_CHECK(!name.empty() && name != kMetadataKey, "{}: invalid tensor name '{}'", where, name);
    LT_CHECK(names.insert(name).second, "{}: duplicate tensor name '{}'", where, name);
    LT_CHECK(tensor.defined(), "{}: tensor '{}' is undefined", where, name);
    LT_CHECK(tensor.layout() == at::kStrided, "{}: tensor '{}' is not a dense tensor", where, name);
    safetensors_dtype_name(tensor.scalar_type());  // throws for unsupported dtypes
    items.emplace_back(name, tensor.to(at::kCPU).contiguous());
  }
  // As the reference writer: descending dtype rank (kDtypes order, which is ascending alignment),
  // then name. Keeps every tensor aligned and makes our bytes identical to the reference's.
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const size_t ra = dtype_rank(a.second.scalar_type()), rb = dtype_rank(b.second.scalar_type());
    return ra != rb ? ra > rb : a.first < b.first;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& meta = header[kMetadataKey] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : items) {
    const uint64_t nbytes = t.nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("{}: cannot encode header (names and metadata must be UTF-8): {}", where, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::array<unsigned char, 8> len_bytes{};
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(text.size() >> (8 * i));

  // Through AtomicFile: big block-aligned writes, each block hashed as it is written, fsync,
  // rename, fsync of the directory (or the caller's, for many files at once).
  AtomicFile file(path, /*sha256=*/true, sync_directory);
  file.write(len_bytes.data(), len_bytes.size());
  file.write(text);
  for (const auto& [name, t] : items) file.write(t.const_data_ptr(), t.nbytes());
  return file.commit();
}

}  // namespace longtune::model
