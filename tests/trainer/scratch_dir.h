// A self-removing temporary directory for tests that link LibTorch. testing::TempDir's
// std::filesystem::remove_all binds to the copy libtorch.so exports, which crashes (a call through
// a null pointer) with the 2.11 wheel; this one removes its tree with nftw instead. Test-only.
#pragma once

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "tests/test_support.h"

namespace longtune::testing {

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "longtune-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    ::nftw(path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
           FTW_DEPTH | FTW_PHYS);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  void write(const std::filesystem::path& relative, const std::string& content) const {
    write_bytes(path_ / relative, content);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace longtune::testing
