// Training checkpoints on disk: the atomic save protocol (temporary directory, fsync, COMPLETE
// marker with sizes and SHA-256, rename into place), pruning, verification and resume selection.
// Which parts a run has and what each stores is trainer/training_state's; when to save is the
// trainer's.
#include "trainer/checkpoint.h"

#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/check.h"
#include "common/json_value.h"
#include "common/file_io.h"
#include "common/log.h"
#include "model/safetensors.h"
#include "dist/process_group.h"
#include "trainer/training_state.h"

namespace longtune::trainer {
namespace fs = std::filesystem;

namespace {

constexpr const char* kCheckpointsDir = "checkpoints";
const char* const kCompleteFile = complete_marker_name();
constexpr const char* kFormat = "longtune.checkpoint";
constexpr int kFormatVersion = 1;
constexpr const char* kStepPrefix = "step_";
constexpr const char* kTempPrefix = ".tmp-";
constexpr const char* kTrashPrefix = ".trash-";

std::string step_dir_name(int64_t step) { return fmt::format("{}{:08d}", kStepPrefix, step); }

// The step of a "step_NNNNNNNN" directory name (8 or more digits), or nullopt for any other name.
std::optional<int64_t> step_from_dir_name(const std::string& name) {
  const std::string prefix = kStepPrefix;
  if (name.size() < prefix.size() + 8 || name.size() > prefix.size() + 18) return std::nullopt;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

bool starts_with(const std::string& text, const char* prefix) { return text.rfind(prefix, 0) == 0; }

// File names inside a checkpoint are plain names: no directories, nothing hidden (the leading dot
// is reserved for temporaries) and not the marker itself.
void check_file_name(const std::string& file_name, const fs::path& directory) {
  LT_CHECK(!file_name.empty() && file_name.find('/') == std::string::npos &&
               file_name.find('\0') == std::string::npos && file_name[0] != '.' &&
               file_name != kCompleteFile,
           "checkpoint {}: invalid file name '{}' (plain names only, not hidden, not '{}')",
           directory.string(), file_name, kCompleteFile);
}

std::string errno_text() { return std::strerror(errno); }

void rename_or_throw(const fs::path& from, const fs::path& to) {
  LT_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename {} to {}: {}", from.string(),
           to.string(), errno_text());
}

// Moves a directory out of the way under a hidden trash name (one atomic rename, so a checkpoint
// is never seen half-deleted), then deletes it. A kill in between leaves a .trash-* directory that
// the next save removes.
void discard_directory(const fs::path& directory) {
  const fs::path trash =
      directory.parent_path() /
      fmt::format("{}{}-{}", kTrashPrefix, directory.filename().string(), ::getpid());
  remove_tree(trash);
  if (::rename(directory.c_str(), trash.c_str()) != 0) {
    LT_WARN("checkpoint: cannot move {} aside for deletion: {}", directory.string(), errno_text());
    return;
  }
  if (!remove_tree(trash)) LT_WARN("checkpoint: could not fully delete {}", trash.string());
}

struct ListedFile {
  std::string name;
  uint64_t bytes = 0;
  std::string sha256;
};

struct CompleteMarker {
  int64_t step = 0;
  std::vector<ListedFile> files;
};

// Parses directory/COMPLETE; throws longtune::Error naming the directory on any problem.
CompleteMarker read_complete_marker(const fs::path& directory) {
  const fs::path marker_path = directory / kCompleteFile;
  std::error_code error;
  LT_CHECK(fs::is_regular_file(marker_path, error),
           "checkpoint {}: no {} marker (not a complete checkpoint)", directory.string(),
           kCompleteFile);
  const std::string text = read_file(marker_path);
  CompleteMarker marker;
  try {
    const nlohmann::json json = nlohmann::json::parse(text);
    LT_CHECK(json.is_object() && json.value("format", "") == kFormat,
             "checkpoint {}: {} is not a {} marker", directory.string(), kCompleteFile, kFormat);
    const std::string where = (directory / kCompleteFile).string();
    const int version = json_value<int>(json.at("version"), where + ": version");
    LT_CHECK(version == kFormatVersion,
             "checkpoint {}: unsupported format version {} (this build reads version {})",
             directory.string(), version, kFormatVersion);
    marker.step = json_value<int64_t>(json.at("step"), where + ": step");
    const nlohmann::json& files = json.at("files");
    LT_CHECK(files.is_object(), "checkpoint {}: 'files' in {} is not an object", directory.string(),
             kCompleteFile);
    for (const auto& [name, entry] : files.items()) {
      check_file_name(name, directory);
      marker.files.push_back(
          {name, json_value<uint64_t>(entry.at("bytes"), where + ": bytes of " + name),
           json_value<std::string>(entry.at("sha256"), where + ": sha256 of " + name)});
    }
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("checkpoint {}: malformed {}: {}", directory.string(), kCompleteFile, e.what());
  }
  return marker;
}

std::string complete_marker_json(int64_t step, const std::vector<ListedFile>& files) {
  nlohmann::ordered_json json = {{"format", kFormat}, {"version", kFormatVersion}, {"step", step}};
  nlohmann::ordered_json listed = nlohmann::ordered_json::object();
  for (const ListedFile& file : files)
    listed[file.name] = {{"bytes", file.bytes}, {"sha256", file.sha256}};
  json["files"] = std::move(listed);
  return json.dump(2) + "\n";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CheckpointWriter

CheckpointWriter::CheckpointWriter(fs::path directory) : directory_(std::move(directory)) {}

void CheckpointWriter::add_file(const std::string& file_name) {
  check_file_name(file_name, directory_);
  LT_CHECK(std::find(files_.begin(), files_.end(), file_name) == files_.end(),
           "checkpoint {}: file '{}' written twice (two parts with the same name?)",
           directory_.string(), file_name);
  files_.push_back(file_name);
}

void CheckpointWriter::put_tensors(const std::string& part,
                                   const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  const std::string file_name = part + ".safetensors";
  add_file(file_name);
  // Detached CPU contiguous copies (a no-op for tensors already so); bits and dtype unchanged.
  std::vector<std::pair<std::string, at::Tensor>> host;
  host.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    LT_CHECK(tensor.defined(), "checkpoint {}: part '{}': tensor '{}' is undefined",
             directory_.string(), part, name);
    host.emplace_back(name, tensor.detach().to(at::kCPU).contiguous());
  }
  model::save_safetensors((directory_ / file_name).string(), host);
}

void CheckpointWriter::put_json(const std::string& part, const std::string& json_text) {
  const std::string file_name = part + ".json";
  add_file(file_name);
  write_file_atomic(directory_ / file_name, json_text);
}

void CheckpointWriter::put_file(const std::string& file_name, const std::string& content) {
  add_file(file_name);
  write_file_atomic(directory_ / file_name, content);
}

// ---------------------------------------------------------------------------------------------
// CheckpointReader

CheckpointReader::CheckpointReader(fs::path directory) : directory_(std::move(directory)) {
  std::error_code error;
  LT_CHECK(fs::is_directory(directory_, error), "checkpoint {}: not a directory",
           directory_.string());
  LT_CHECK(fs::is_regular_file(directory_ / kCompleteFile, error),
           "checkpoint {}: no {} marker (not a complete checkpoint)", directory_.string(),
           kCompleteFile);
}

CheckpointReader::~CheckpointReader() = default;

bool CheckpointReader::has_part(const std::string& part) const {
  std::error_code error;
  return fs::is_regular_file(directory_ / (part + ".safetensors"), error) ||
         fs::is_regular_file(directory_ / (part + ".json"), error);
}

const model::SafetensorsFile& CheckpointReader::tensors_file(const std::string& part) const {
  auto it = open_.find(part);
  if (it != open_.end()) return *it->second;
  const fs::path path = directory_ / (part + ".safetensors");
  std::error_code error;
  LT_CHECK(fs::is_regular_file(path, error), "checkpoint {}: part '{}' has no tensors ({} missing)",
           directory_.string(), part, path.filename().string());
  auto file = std::make_unique<model::SafetensorsFile>(path.string());
  return *open_.emplace(part, std::move(file)).first->second;
}

std::vector<std::string> CheckpointReader::tensor_names(const std::string& part) const {
  std::vector<std::string> names;
  for (const model::TensorInfo& info : tensors_file(part).tensors()) names.push_back(info.name);
  return names;
}

at::Tensor CheckpointReader::tensor(const std::string& part, const std::string& name) const {
  const model::SafetensorsFile& file = tensors_file(part);
  LT_CHECK(file.contains(name), "checkpoint {}: part '{}' has no tensor '{}'", directory_.string(),
           part, name);
  // An owned copy: the file's view is read-only mapped memory that must not outlive the reader.
  return file.tensor(name).clone();
}

std::string CheckpointReader::json(const std::string& part) const {
  const fs::path path = directory_ / (part + ".json");
  std::error_code error;
  LT_CHECK(fs::is_regular_file(path, error),
           "checkpoint {}: part '{}' has no JSON state ({} missing)", directory_.string(), part,
           path.filename().string());
  return read_file(path);
}

std::string CheckpointReader::file(const std::string& file_name) const {
  const fs::path path = directory_ / file_name;
  std::error_code error;
  LT_CHECK(fs::is_regular_file(path, error), "checkpoint {}: file '{}' missing",
           directory_.string(), file_name);
  return read_file(path);
}

// ---------------------------------------------------------------------------------------------
// CheckpointManager

CheckpointManager::CheckpointManager(fs::path run_dir, int64_t keep_last)
    : checkpoints_dir_(std::move(run_dir) / kCheckpointsDir), keep_last_(keep_last) {
  LT_CHECK(keep_last_ >= 1, "checkpoint: keep_last must be >= 1, got {}", keep_last_);
}

fs::path CheckpointManager::save(int64_t step, const std::map<std::string, const Stateful*>& parts,
                                 dist::ProcessGroup* group) {
  LT_CHECK(step >= 0, "checkpoint: step must be >= 0, got {}", step);
  const bool leader = group == nullptr || group->rank() == 0;
  const std::string call = fmt::format("checkpoint/{}/{}", step, collective_calls_++);
  std::error_code error;
  const std::string name = step_dir_name(step);
  const fs::path final_dir = checkpoints_dir_ / name;
  // Every rank must write into the same temporary directory: rank 0 names it.
  std::string temp_name = fmt::format("{}{}-{}", kTempPrefix, name, ::getpid());
  if (group != nullptr) temp_name = group->all_gather_strings(call + "/temp", temp_name).front();
  const fs::path temp_dir = checkpoints_dir_ / temp_name;
  if (leader) {
    if (!fs::is_directory(checkpoints_dir_, error)) {
      fs::create_directories(checkpoints_dir_, error);
      LT_CHECK(!error, "checkpoint: cannot create {}: {}", checkpoints_dir_.string(), error.message());
      const fs::path run_dir = checkpoints_dir_.parent_path();
      fsync_directory(run_dir.empty() ? fs::path(".") : run_dir);
    }
    remove_tree(temp_dir);  // a leftover of an earlier failed save by a process with our pid
    LT_CHECK(fs::create_directory(temp_dir, error) && !error, "checkpoint: cannot create {}: {}",
             temp_dir.string(), error.message());
  }
  if (group != nullptr) group->barrier();

  try {
    CheckpointWriter writer(temp_dir);
    for (const auto& [part_name, part] : parts) {
      LT_CHECK(part != nullptr, "checkpoint {}: part '{}' is null", final_dir.string(), part_name);
      part->save(writer);
    }
    // Every file was fsynced by its own atomic write; hash what is on disk, which is what a later
    // verify() will hash.
    std::vector<ListedFile> listed;
    for (const std::string& file_name : writer.files()) {
      const fs::path path = temp_dir / file_name;
      const uint64_t bytes = fs::file_size(path, error);
      LT_CHECK(!error, "checkpoint: cannot stat {}: {}", path.string(), error.message());
      listed.push_back({file_name, bytes, sha256_file(path)});
    }
    if (group != nullptr) {
      // Rank 0 lists every rank's files; gathering the listings is also the "all ranks wrote" barrier.
      nlohmann::json mine = nlohmann::json::array();
      for (const ListedFile& file : listed) mine.push_back({file.name, file.bytes, file.sha256});
      const std::vector<std::string> all = group->all_gather_strings(call + "/files", mine.dump());
      if (leader) {
        listed.clear();
        for (const std::string& text : all)
          for (const auto& file : nlohmann::json::parse(text))
            listed.push_back({file.at(0).get<std::string>(), file.at(1).get<uint64_t>(), file.at(2).get<std::string>()});
      }
    }
    if (leader) {
      write_file_atomic(temp_dir / kCompleteFile, complete_marker_json(step, listed));
      fsync_directory(temp_dir);
      // Replacing a step directory (say a damaged one): move it aside first, since rename() does
      // not replace a non-empty directory.
      if (fs::exists(fs::symlink_status(final_dir, error))) discard_directory(final_dir);
      rename_or_throw(temp_dir, final_dir);
      fsync_directory(checkpoints_dir_);
    }
  } catch (...) {
    if (leader) remove_tree(temp_dir);
    throw;
  }
  if (leader) prune(final_dir);
  // Nobody goes on (and possibly saves or resumes again) before the checkpoint is in place.
  if (group != nullptr) group->barrier();
  return final_dir;
}

void CheckpointManager::prune(const fs::path& just_written) const {
  // The checkpoint just written is always kept, even when higher-numbered ones exist (after
  // resuming from an older checkpoint); so are the keep_last - 1 newest others.
  int64_t kept = 1;
  for (const fs::path& directory : list_complete()) {
    if (directory == just_written) continue;
    if (kept < keep_last_) {
      ++kept;
      continue;
    }
    LT_INFO("checkpoint: deleting {} (keep_last = {})", directory.string(), keep_last_);
    discard_directory(directory);
  }
  // Leftovers of saves or deletions killed midway (.tmp-*, .trash-*), from any process.
  std::error_code error;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir_, error)) {
    const std::string name = entry.path().filename().string();
    if (starts_with(name, kTempPrefix) || starts_with(name, kTrashPrefix))
      stale.push_back(entry.path());
  }
  for (const fs::path& path : stale) {
    LT_DEBUG("checkpoint: deleting stale {}", path.string());
    remove_tree(path);
  }
}

std::vector<fs::path> CheckpointManager::list_complete() const {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir_, error)) {
    const std::optional<int64_t> step = step_from_dir_name(entry.path().filename().string());
    std::error_code ignored;
    if (step && entry.is_directory(ignored) &&
        fs::is_regular_file(entry.path() / kCompleteFile, ignored))
      found.emplace_back(*step, entry.path());
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> newest_first;
  for (auto& [step, path] : found) newest_first.push_back(std::move(path));
  return newest_first;
}

bool CheckpointManager::verify(const fs::path& directory, std::string* why) {
  auto fail = [&](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return false;
  };
  CompleteMarker marker;
  try {
    marker = read_complete_marker(directory);
  } catch (const Error& e) {
    return fail(e.what());
  }
  const std::optional<int64_t> named_step = step_from_dir_name(directory.filename().string());
  if (named_step && *named_step != marker.step)
    return fail(fmt::format("{} records step {} but the directory is named for step {}",
                            kCompleteFile, marker.step, *named_step));
  // Sizes first: a truncated or missing file is found without hashing gigabytes.
  for (const ListedFile& file : marker.files) {
    std::error_code error;
    const fs::path path = directory / file.name;
    if (!fs::is_regular_file(path, error))
      return fail(fmt::format("file '{}' is missing", file.name));
    const uint64_t bytes = fs::file_size(path, error);
    if (error || bytes != file.bytes)
      return fail(fmt::format("file '{}' has {} bytes, {} lists {}", file.name, bytes,
                              kCompleteFile, file.bytes));
  }
  for (const ListedFile& file : marker.files) {
    std::string digest;
    try {
      digest = sha256_file(directory / file.name);
    } catch (const Error& e) {
      return fail(e.what());
    }
    if (digest != file.sha256)
      return fail(fmt::format("file '{}' has SHA-256 {}, {} lists {}", file.name, digest,
                              kCompleteFile, file.sha256));
  }
  return true;
}

std::optional<fs::path> CheckpointManager::find_resume(const std::string& resume) const {
  if (resume == "never") return std::nullopt;
  if (resume == "auto") {
    std::vector<std::string> damaged;
    for (const fs::path& directory : list_complete()) {
      std::string why;
      if (verify(directory, &why)) {
        if (!damaged.empty())
          LT_WARN("checkpoint: resuming from {}, older than {} damaged checkpoint(s)",
                  directory.string(), damaged.size());
        return directory;
      }
      LT_WARN("checkpoint: skipping damaged checkpoint {}: {}", directory.string(), why);
      damaged.push_back(fmt::format("{} ({})", directory.string(), why));
    }
    // Restarting from scratch over damaged checkpoints would silently throw away the run.
    LT_CHECK(damaged.empty(),
             "checkpoint: every checkpoint in {} is damaged: {}; to start over anyway, set resume "
             "to 'never' or move them away",
             checkpoints_dir_.string(), fmt::join(damaged, "; "));
    return std::nullopt;
  }
  // An explicit directory; a bare "step_00000123" also names one in this run's checkpoints dir.
  std::error_code error;
  fs::path directory = resume;
  LT_CHECK(!resume.empty(), "checkpoint: empty resume path");
  if (!fs::exists(directory, error) && directory.is_relative() &&
      fs::exists(checkpoints_dir_ / directory, error))
    directory = checkpoints_dir_ / directory;
  LT_CHECK(fs::is_directory(directory, error), "checkpoint: resume checkpoint {} does not exist",
           directory.string());
  LT_CHECK(fs::is_regular_file(directory / kCompleteFile, error),
           "checkpoint: resume checkpoint {} is not complete (no {} marker)", directory.string(),
           kCompleteFile);
  std::string why;
  LT_CHECK(verify(directory, &why), "checkpoint: resume checkpoint {} is damaged: {}",
           directory.string(), why);
  return directory;
}

std::optional<fs::path> CheckpointManager::find_resume(const std::string& resume, dist::ProcessGroup& group) const {
  const std::string call = fmt::format("checkpoint/resume/{}", collective_calls_);
  std::string choice, failure;
  if (group.rank() == 0) {
    try {
      const std::optional<fs::path> found = find_resume(resume);
      choice = found ? "path:" + found->string() : "none:";
    } catch (const Error& e) {
      choice = std::string("error:") + e.what();
    }
  }
  const std::string decided = group.all_gather_strings(call, choice).front();
  LT_CHECK(!starts_with(decided, "error:"), "{}", decided.substr(6));
  if (starts_with(decided, "none:")) return std::nullopt;
  return fs::path(decided.substr(5));
}

void CheckpointManager::load(const fs::path& directory,
                             const std::map<std::string, Stateful*>& parts) {
  CheckpointReader reader(directory);
  for (const auto& [part_name, part] : parts) {
    LT_CHECK(part != nullptr, "checkpoint {}: part '{}' is null", directory.string(), part_name);
    try {
      part->load(reader);
    } catch (const Error& e) {
      // The reader's errors name the directory already; a part's own checks (shapes, versions)
      // may not.
      const std::string message = e.what();
      if (message.find(directory.string()) != std::string::npos) throw;
      LT_FAIL("checkpoint {}: loading part '{}': {}", directory.string(), part_name, message);
    }
  }
}

bool CheckpointManager::is_complete(const fs::path& directory) {
  std::error_code error;
  return fs::is_regular_file(directory / kCompleteFile, error);
}

int64_t CheckpointManager::step_of(const fs::path& directory) {
  return read_complete_marker(directory).step;
}

}  // namespace longtune::trainer
