// The safetensors reader (model/safetensors) on arbitrary files: header JSON, dtype and shape
// table, byte ranges, metadata, and every tensor view of an accepted file.
#include <ATen/ATen.h>

#include "fuzz/fuzz_support.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  const auto path = fuzz::input_file(data, size, "input.safetensors");
  fuzz::errors_only([&] {
    const model::SafetensorsFile file(path.string());
    for (const model::TensorInfo& info : file.tensors()) {
      const at::Tensor tensor = file.tensor(info.name);
      fuzz::require(tensor.sizes() == at::IntArrayRef(info.shape) && tensor.scalar_type() == info.dtype);
      fuzz::require(static_cast<uint64_t>(tensor.nbytes()) == info.end - info.begin);
      if (tensor.numel() > 0) (void)tensor.sum();  // touches every byte of the range
    }
  });
  return 0;
}
