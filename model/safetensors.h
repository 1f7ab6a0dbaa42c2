// Own reader/writer for the HF safetensors format: a memory-mapped, fully validated reader and an
// atomic writer. Not a checkpoint layout (sharding, index.json and HF names are hf_checkpoint's
// job) and not a device loader: tensors come back as CPU views that callers copy or convert.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/file_io.h"

namespace longtune::model {

// One header entry: dtype, shape and byte range [begin, end) relative to the start of the buffer.
struct TensorInfo {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

namespace detail {
struct Mapping;  // an mmap of the whole file; shared by the file object and every tensor viewing it
}  // namespace detail

// A read-only, memory-mapped .safetensors file. Validates the whole header at open. The file must
// not be truncated or rewritten in place while mapped (rename-over, as save_safetensors does, is
// fine).
class SafetensorsFile {
 public:
  // Maps and validates `path`; throws Error naming the path on any problem.
  explicit SafetensorsFile(const std::string& path);

  // The path this file was opened from.
  const std::string& path() const { return path_; }
  // Every tensor entry, in file (data offset) order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // Whether the header has a tensor called `name`.
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // The entry for `name`; throws Error naming the file and the tensor if absent.
  const TensorInfo& info(const std::string& name) const;
  // A CPU tensor viewing the mapping (zero-copy; keeps the mapping alive). The memory is mapped
  // PROT_READ: never write to it in place; .clone() or .to() first. Data not aligned to the element
  // size is copied into fresh memory instead. BOOL data is checked to be 0/1.
  at::Tensor tensor(const std::string& name) const;
  // The "__metadata__" string map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Size of the whole file in bytes.
  uint64_t file_size() const { return file_size_; }
  // Byte offset of the data buffer within the file (8 + header length).
  uint64_t data_offset() const { return data_offset_; }

 private:
  void parse_header(const char* header, uint64_t header_len);

  std::string path_;
  std::shared_ptr<detail::Mapping> mapping_;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` to `path` atomically (AtomicFile: temporary, fsync, rename, fsync dir unless
// `sync_directory` is false) and returns the file's size and SHA-256, computed while writing.
// Non-CPU or non-contiguous tensors are converted first. Names must be unique, non-empty and not
// "__metadata__".
FileDigest save_safetensors(const std::string& path,
                            const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                            const std::map<std::string, std::string>& metadata = {}, bool sync_directory = true);

// The safetensors dtype string ("BF16", "F32", ...) for `dtype`; throws for unsupported dtypes.
std::string safetensors_dtype_name(c10::ScalarType dtype);

// The ScalarType for a safetensors dtype string; throws an Error mentioning `context` if unknown.
c10::ScalarType safetensors_dtype_from_name(const std::string& name, const std::string& context);

}  // namespace longtune::model
