// Training checkpoints on disk: the atomic save protocol (temporary directory, files hashed while
// written and fsynced, COMPLETE marker with sizes, SHA-256 and writing ranks, rename into place),
// synchronous or on a background thread, pruning, verification spread over the ranks and resume
// selection. Which parts a run has and what each stores is trainer/training_state's; when to save
// is the trainer's.
#include "trainer/checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <thread>

#include "common/check.h"
#include "common/json_value.h"
#include "common/file_io.h"
#include "common/log.h"
#include "model/safetensors.h"
#include "dist/process_group.h"
#include "trainer/device.h"
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
  int rank = -1;  // the rank that wrote it; -1 in markers written before ranks were recorded
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
      // "rank" is optional (older markers lack it) and advisory: it says who verifies the file,
      // never how to read it, so the format version stays and older builds read newer markers.
      marker.files.push_back(
          {name, json_value<uint64_t>(entry.at("bytes"), where + ": bytes of " + name),
           json_value<std::string>(entry.at("sha256"), where + ": sha256 of " + name),
           entry.contains("rank") ? json_value<int>(entry.at("rank"), where + ": rank of " + name) : -1});
    }
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("checkpoint {}: malformed {}: {}", directory.string(), kCompleteFile, e.what());
  }
  return marker;
}

std::string complete_marker_json(int64_t step, const std::vector<ListedFile>& files) {
  nlohmann::ordered_json json = {{"format", kFormat}, {"version", kFormatVersion}, {"step", step}};
  nlohmann::ordered_json listed = nlohmann::ordered_json::object();
  for (const ListedFile& file : files) {
    listed[file.name] = {{"bytes", file.bytes}, {"sha256", file.sha256}};
    if (file.rank >= 0) listed[file.name]["rank"] = file.rank;
  }
  json["files"] = std::move(listed);
  return json.dump(2) + "\n";
}


// An exchange of one string per rank, in rank order: the group's store (all_gather_strings), or
// this process alone.
using Exchange = std::function<std::vector<std::string>(const std::string& key, const std::string& value)>;

Exchange exchange_of(dist::ProcessGroup* group) {
  if (group == nullptr) return [](const std::string&, const std::string& value) { return std::vector{value}; };
  return [group](const std::string& key, const std::string& value) { return group->all_gather_strings(key, value); };
}

constexpr const char* kErrorTag = "error:";

// The files a rank wrote, as it tells rank 0: [[name, bytes, sha256], ...].
std::string listing_json(const std::vector<WrittenFile>& written) {
  nlohmann::json listing = nlohmann::json::array();
  for (const WrittenFile& file : written) listing.push_back({file.name, file.digest.bytes, file.digest.sha256});
  return listing.dump();
}

std::vector<ListedFile> parse_listing(const std::string& text, int rank) {
  std::vector<ListedFile> files;
  for (const auto& file : nlohmann::json::parse(text))
    files.push_back({file.at(0).get<std::string>(), file.at(1).get<uint64_t>(), file.at(2).get<std::string>(), rank});
  return files;
}

// Which rank of `world` verifies each listed file: the one whose number is the writer's modulo the
// world size (every rank hashes what it wrote, when resuming under the same world size); files of
// unknown writer go to the least loaded rank, largest first.
std::vector<int> verifying_ranks(const std::vector<ListedFile>& files, int world) {
  std::vector<int> owner(files.size(), 0);
  std::vector<uint64_t> load(static_cast<size_t>(world), 0);
  std::vector<size_t> unknown;
  for (size_t i = 0; i < files.size(); ++i) {
    if (files[i].rank < 0) {
      unknown.push_back(i);
      continue;
    }
    owner[i] = files[i].rank % world;
    load[static_cast<size_t>(owner[i])] += files[i].bytes;
  }
  std::stable_sort(unknown.begin(), unknown.end(), [&](size_t a, size_t b) { return files[a].bytes > files[b].bytes; });
  for (const size_t i : unknown) {
    owner[i] = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    load[static_cast<size_t>(owner[i])] += files[i].bytes;
  }
  return owner;
}

// The first failure among the ranks' verdicts ("" = none), naming the rank when there are several.
std::string first_failure(const std::vector<std::string>& verdicts) {
  for (size_t r = 0; r < verdicts.size(); ++r)
    if (!verdicts[r].empty())
      return verdicts.size() == 1 ? verdicts[r] : fmt::format("rank {} found: {}", r, verdicts[r]);
  return "";
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CheckpointWriter

// One file waiting in host memory to be written: tensors (host copies) or a text.
struct CheckpointWriter::Snapshot {
  std::string file_name;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::optional<std::string> text;
};

CheckpointWriter::CheckpointWriter(fs::path directory, Mode mode) : directory_(std::move(directory)), mode_(mode) {}

CheckpointWriter::~CheckpointWriter() = default;

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
  std::vector<std::pair<std::string, at::Tensor>> host;
  host.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    LT_CHECK(tensor.defined(), "checkpoint {}: part '{}': tensor '{}' is undefined",
             directory_.string(), part, name);
    const at::Tensor source = tensor.detach();
    if (mode_ == Mode::kBorrow) {
      // CPU contiguous copies only where needed (a no-op for tensors already so); bits unchanged.
      host.emplace_back(name, source.to(at::kCPU).contiguous());
    } else if (source.is_cuda()) {
      // Pinned, so the copy is a DMA the device runs without staging; waited for in finish_snapshot().
      at::Tensor copy = at::empty(source.sizes(), source.options().device(at::kCPU).pinned_memory(true));
      copy.copy_(source, /*non_blocking=*/true);
      if (std::find(copy_devices_.begin(), copy_devices_.end(), source.device().index()) == copy_devices_.end())
        copy_devices_.push_back(source.device().index());
      host.emplace_back(name, std::move(copy));
    } else {
      // A copy of our own: the part's tensors change with the next optimizer step.
      host.emplace_back(name, source.is_contiguous() ? source.clone() : source.contiguous());
    }
  }
  snapshot_.push_back({file_name, std::move(host), std::nullopt});
}

void CheckpointWriter::put_json(const std::string& part, const std::string& json_text) {
  put_file_named(part + ".json", json_text);
}

void CheckpointWriter::put_file(const std::string& file_name, const std::string& content) {
  put_file_named(file_name, content);
}

void CheckpointWriter::put_file_named(const std::string& file_name, const std::string& content) {
  add_file(file_name);
  snapshot_.push_back({file_name, {}, content});
}

void CheckpointWriter::finish_snapshot() {
  // Every copy was queued on its device's current stream, behind the kernels that last wrote the
  // tensor; waiting for those streams is what makes the snapshot the state at this step.
  for (const int index : copy_devices_) synchronize(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)));
  copy_devices_.clear();
}

void CheckpointWriter::finish_writing() {
  LT_CHECK(copy_devices_.empty(), "checkpoint {}: snapshot written before its device copies finished", directory_.string());
  std::vector<size_t> order(snapshot_.size());
  std::vector<uint64_t> bytes(snapshot_.size(), 0);
  for (size_t i = 0; i < snapshot_.size(); ++i) {
    order[i] = i;
    bytes[i] = snapshot_[i].text ? snapshot_[i].text->size() : 0;
    for (const auto& [name, tensor] : snapshot_[i].tensors) bytes[i] += tensor.nbytes();
  }
  // Largest first, so that the longest file starts at once and the small ones fill in around it.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bytes[a] > bytes[b]; });
  std::vector<FileDigest> digests(snapshot_.size());
  std::vector<std::string> errors(snapshot_.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next++; k < order.size(); k = next++) {
      Snapshot& file = snapshot_[order[k]];
      const fs::path path = directory_ / file.file_name;
      try {
        digests[order[k]] = file.text ? write_file_atomic(path, *file.text, /*sync_directory=*/false)
                                      : model::save_safetensors(path.string(), file.tensors, {}, /*sync_directory=*/false);
      } catch (const std::exception& e) {
        errors[order[k]] = fmt::format("writing {}: {}", file.file_name, e.what());
      }
      // Frees this file's host copy as soon as it is on disk.
      file.tensors.clear();
      file.text.reset();
    }
  };
  // A background (kSnapshot) save writes one file at a time: it shares the cores with training, and
  // a second hashing thread would slow the steps more than it shortens the save.
  const size_t parallel = mode_ == Mode::kSnapshot ? 1 : kParallelFiles;
  const size_t helpers = std::min({parallel, order.size(), size_t{std::max(1u, std::thread::hardware_concurrency())}});
  std::vector<std::thread> threads;
  for (size_t t = 1; t < helpers; ++t) threads.emplace_back(work);
  work();
  for (std::thread& thread : threads) thread.join();
  for (const std::string& error : errors) LT_CHECK(error.empty(), "{}", error);
  for (size_t i = 0; i < snapshot_.size(); ++i) written_.push_back({snapshot_[i].file_name, digests[i]});
  snapshot_.clear();
  // One fsync for the names of all of this rank's files (each file's data was fsynced by itself).
  if (!written_.empty()) fsync_directory(directory_);
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

// One save between its start on the main thread and its commit.
struct CheckpointManager::SaveJob {
  int64_t step = 0;
  std::string call;  // prefix of this save's store keys
  fs::path temp_dir, final_dir;
  dist::ProcessGroup* group = nullptr;
  int rank = 0;
  std::unique_ptr<CheckpointWriter> writer;
  std::exception_ptr part_error;  // a part's save failed on this rank
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  bool leader() const { return rank == 0; }
};

CheckpointManager::CheckpointManager(fs::path run_dir, int64_t keep_last)
    : checkpoints_dir_(std::move(run_dir) / kCheckpointsDir), keep_last_(keep_last) {
  LT_CHECK(keep_last_ >= 1, "checkpoint: keep_last must be >= 1, got {}", keep_last_);
}

CheckpointManager::~CheckpointManager() {
  try {
    wait();
  } catch (const std::exception& e) {
    LT_ERROR("{}", e.what());
  }
}

void CheckpointManager::wait() {
  if (!writer_thread_.joinable()) return;
  writer_thread_.join();
  if (!writer_error_) return;
  const std::exception_ptr error = std::exchange(writer_error_, nullptr);
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    LT_FAIL("asynchronous save of checkpoint {} failed: {}", in_flight_.string(), e.what());
  }
}

fs::path CheckpointManager::save(int64_t step, const std::map<std::string, const Stateful*>& parts,
                                 dist::ProcessGroup* group, SaveMode mode) {
  wait();  // one save at a time: the previous one is committed (or its error surfaces) first
  LT_CHECK(step >= 0, "checkpoint: step must be >= 0, got {}", step);
  auto job = std::make_unique<SaveJob>();
  job->step = step;
  job->group = group;
  job->rank = group == nullptr ? 0 : group->rank();
  job->call = fmt::format("checkpoint/{}/{}", step, collective_calls_++);
  std::error_code error;
  const std::string name = step_dir_name(step);
  job->final_dir = checkpoints_dir_ / name;
  // Every rank must write into the same temporary directory: rank 0 names it.
  std::string temp_name = fmt::format("{}{}-{}", kTempPrefix, name, ::getpid());
  if (group != nullptr) temp_name = group->all_gather_strings(job->call + "/temp", temp_name).front();
  job->temp_dir = checkpoints_dir_ / temp_name;
  if (job->leader()) {
    if (!fs::is_directory(checkpoints_dir_, error)) {
      fs::create_directories(checkpoints_dir_, error);
      LT_CHECK(!error, "checkpoint: cannot create {}: {}", checkpoints_dir_.string(), error.message());
      const fs::path run_dir = checkpoints_dir_.parent_path();
      fsync_directory(run_dir.empty() ? fs::path(".") : run_dir);
    }
    remove_tree(job->temp_dir);  // a leftover of an earlier failed save by a process with our pid
    LT_CHECK(fs::create_directory(job->temp_dir, error) && !error, "checkpoint: cannot create {}: {}",
             job->temp_dir.string(), error.message());
  }
  if (group != nullptr) group->barrier();

  const bool async = mode == SaveMode::kAsync;
  job->writer = std::make_unique<CheckpointWriter>(
      job->temp_dir, async ? CheckpointWriter::Mode::kSnapshot : CheckpointWriter::Mode::kBorrow);
  try {
    for (const auto& [part_name, part] : parts) {
      LT_CHECK(part != nullptr, "checkpoint {}: part '{}' is null", job->final_dir.string(), part_name);
      part->save(*job->writer);
    }
    job->writer->finish_snapshot();
  } catch (...) {
    // Told to the other ranks in finish_save, so that every rank fails this save, none waits.
    job->part_error = std::current_exception();
  }
  const fs::path final_dir = job->final_dir;
  if (!async || job->part_error) {
    finish_save(*job);
    return final_dir;
  }
  in_flight_ = final_dir;
  writer_thread_ = std::thread([this, job = std::move(job)] {
    try {
      finish_save(*job);
      LT_INFO("checkpoint {} written in the background in {:.2f} s", job->final_dir.string(), seconds_since(job->start));
    } catch (...) {
      writer_error_ = std::current_exception();
    }
  });
  return final_dir;
}

void CheckpointManager::finish_save(SaveJob& job) const {
  // This rank's files, durable (each fsynced as it is committed), or why not.
  std::string mine;
  if (job.part_error) {
    try {
      std::rethrow_exception(job.part_error);
    } catch (const std::exception& e) {
      mine = kErrorTag + std::string(e.what());
    }
  } else {
    try {
      job.writer->finish_writing();
      mine = listing_json(job.writer->written());
    } catch (const std::exception& e) {
      mine = kErrorTag + std::string(e.what());
    }
  }
  job.writer.reset();
  const Exchange exchange = exchange_of(job.group);
  // Gathering the listings is also the "every rank's files are durable" barrier.
  const std::vector<std::string> all = exchange(job.call + "/files", mine);
  std::string outcome;
  if (job.leader()) {
    try {
      std::vector<std::string> failures;
      std::vector<ListedFile> listed;
      for (size_t r = 0; r < all.size(); ++r) {
        if (starts_with(all[r], kErrorTag))
          failures.push_back(all.size() == 1 ? all[r].substr(6) : fmt::format("rank {}: {}", r, all[r].substr(6)));
        else
          for (ListedFile& file : parse_listing(all[r], static_cast<int>(r))) listed.push_back(std::move(file));
      }
      LT_CHECK(failures.empty(), "{}", fmt::join(failures, "; "));
      write_file_atomic(job.temp_dir / kCompleteFile, complete_marker_json(job.step, listed));  // fsyncs temp_dir
      // Replacing a step directory (say a damaged one): move it aside first, since rename() does
      // not replace a non-empty directory.
      std::error_code error;
      if (fs::exists(fs::symlink_status(job.final_dir, error))) discard_directory(job.final_dir);
      rename_or_throw(job.temp_dir, job.final_dir);
      fsync_directory(checkpoints_dir_);
      outcome = "ok";
    } catch (const std::exception& e) {
      outcome = kErrorTag + std::string(e.what());
      remove_tree(job.temp_dir);
    }
    // Only now, with the new checkpoint in place, may older ones go.
    if (outcome == "ok") prune(job.final_dir);
  }
  // Nobody goes on (and possibly saves or resumes again) before the checkpoint is in place.
  const std::string decided = exchange(job.call + "/commit", outcome).front();
  if (decided == "ok") return;
  if (job.part_error) std::rethrow_exception(job.part_error);
  LT_FAIL("checkpoint {}: {}", job.final_dir.string(), decided.substr(6));
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
  // Leftovers of saves or deletions killed midway (.tmp-*, .trash-*), from any process. No save of
  // ours is in flight: this runs after the commit, and the next save waits for it.
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

std::string CheckpointManager::verify_share(const fs::path& directory, int rank, int world, bool hash) {
  CompleteMarker marker;
  try {
    marker = read_complete_marker(directory);
  } catch (const Error& e) {
    return e.what();
  }
  const std::optional<int64_t> named_step = step_from_dir_name(directory.filename().string());
  if (named_step && *named_step != marker.step)
    return fmt::format("{} records step {} but the directory is named for step {}", kCompleteFile, marker.step,
                       *named_step);
  const std::vector<int> owners = verifying_ranks(marker.files, world);
  for (size_t i = 0; i < marker.files.size(); ++i) {
    if (owners[i] != rank) continue;
    const ListedFile& file = marker.files[i];
    const fs::path path = directory / file.name;
    std::error_code error;
    if (!hash) {
      if (!fs::is_regular_file(path, error)) return fmt::format("file '{}' is missing", file.name);
      const uint64_t bytes = fs::file_size(path, error);
      if (error || bytes != file.bytes)
        return fmt::format("file '{}' has {} bytes, {} lists {}", file.name, bytes, kCompleteFile, file.bytes);
      continue;
    }
    std::string digest;
    try {
      digest = sha256_file(path);
    } catch (const Error& e) {
      return e.what();
    }
    if (digest != file.sha256)
      return fmt::format("file '{}' has SHA-256 {}, {} lists {}", file.name, digest, kCompleteFile, file.sha256);
  }
  return "";
}

bool CheckpointManager::verify(const fs::path& directory, std::string* why) {
  // Sizes first: a truncated or missing file is found without hashing gigabytes.
  std::string failure = verify_share(directory, 0, 1, /*hash=*/false);
  if (failure.empty()) failure = verify_share(directory, 0, 1, /*hash=*/true);
  if (why != nullptr) *why = failure;
  return failure.empty();
}

namespace {

// The checkpoints resume may take, as rank 0 finds them: newest first for "auto" (warning about
// step directories without a marker), the one named otherwise.
nlohmann::json resume_candidates(const std::string& resume, const fs::path& checkpoints_dir,
                                 const std::vector<fs::path>& complete) {
  if (resume == "never") return {{"explicit", false}, {"candidates", nlohmann::json::array()}};
  if (resume == "auto") {
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(checkpoints_dir, error)) {
      std::error_code ignored;
      if (step_from_dir_name(entry.path().filename().string()) && entry.is_directory(ignored) &&
          !fs::is_regular_file(entry.path() / kCompleteFile, ignored))
        LT_WARN("checkpoint: skipping {}: no {} marker (not a complete checkpoint: a save that did not finish, or "
                "a directory made by hand)", entry.path().string(), kCompleteFile);
    }
    nlohmann::json candidates = nlohmann::json::array();
    for (const fs::path& directory : complete) candidates.push_back(directory.string());
    return {{"explicit", false}, {"candidates", candidates}};
  }
  // An explicit directory; a bare "step_00000123" also names one in this run's checkpoints dir.
  std::error_code error;
  fs::path directory = resume;
  LT_CHECK(!resume.empty(), "checkpoint: empty resume path");
  if (!fs::exists(directory, error) && directory.is_relative() && fs::exists(checkpoints_dir / directory, error))
    directory = checkpoints_dir / directory;
  LT_CHECK(fs::is_directory(directory, error), "checkpoint: resume checkpoint {} does not exist", directory.string());
  LT_CHECK(fs::is_regular_file(directory / kCompleteFile, error),
           "checkpoint: resume checkpoint {} is not complete (no {} marker)", directory.string(), kCompleteFile);
  return {{"explicit", true}, {"candidates", {directory.string()}}};
}

}  // namespace

std::optional<fs::path> CheckpointManager::find_resume(const std::string& resume) {
  return resolve_resume(resume, 0, 1, exchange_of(nullptr));
}

std::optional<fs::path> CheckpointManager::find_resume(const std::string& resume, dist::ProcessGroup& group) {
  return resolve_resume(resume, group.rank(), group.world_size(), exchange_of(&group));
}

std::optional<fs::path> CheckpointManager::resolve_resume(const std::string& resume, int rank, int world,
                                                          const Exchange& exchange) {
  const std::string call = fmt::format("checkpoint/resume/{}", collective_calls_++);
  const auto start = std::chrono::steady_clock::now();
  // Rank 0 looks; every rank then checks the same candidates, in the same order.
  std::string listing;
  if (rank == 0) {
    try {
      listing = resume_candidates(resume, checkpoints_dir_, list_complete()).dump();
    } catch (const std::exception& e) {
      listing = kErrorTag + std::string(e.what());
    }
  }
  const std::string shared = exchange(call + "/candidates", listing).front();
  LT_CHECK(!starts_with(shared, kErrorTag), "{}", shared.substr(6));
  const nlohmann::json found = nlohmann::json::parse(shared);
  const bool explicit_path = found.at("explicit").get<bool>();
  std::optional<fs::path> chosen;
  std::vector<std::pair<std::string, std::string>> damaged;  // directory, why
  for (size_t i = 0; i < found.at("candidates").size() && !chosen; ++i) {
    const fs::path directory = found.at("candidates")[i].get<std::string>();
    const std::string key = fmt::format("{}/{}", call, i);
    // Sizes everywhere first (cheap), hashes only if every size is right.
    std::string why = first_failure(exchange(key + "/sizes", verify_share(directory, rank, world, false)));
    if (why.empty()) why = first_failure(exchange(key + "/hashes", verify_share(directory, rank, world, true)));
    if (why.empty()) {
      chosen = directory;
      break;
    }
    if (rank == 0 && !explicit_path) LT_WARN("checkpoint: skipping damaged checkpoint {}: {}", directory.string(), why);
    damaged.emplace_back(directory.string(), why);
  }
  // Rank 0 decides; every rank acts on its word.
  std::string decision;
  if (rank == 0) {
    if (chosen) {
      decision = "path:" + chosen->string();
      if (!damaged.empty())
        LT_WARN("checkpoint: resuming from {}, older than {} damaged checkpoint(s)", chosen->string(), damaged.size());
      LT_INFO("checkpoint: {} verified by {} rank(s) in {:.2f} s", chosen->string(), world, seconds_since(start));
    } else if (explicit_path) {
      decision = fmt::format("{}checkpoint: resume checkpoint {} is damaged: {}", kErrorTag, damaged.at(0).first,
                             damaged.at(0).second);
    } else if (!damaged.empty()) {
      // Restarting from scratch over damaged checkpoints would silently throw away the run.
      std::vector<std::string> listed;
      for (const auto& [directory, why] : damaged) listed.push_back(fmt::format("{} ({})", directory, why));
      decision = fmt::format("{}checkpoint: every checkpoint in {} is damaged: {}; to start over anyway, set resume "
                             "to 'never' or move them away", kErrorTag, checkpoints_dir_.string(), fmt::join(listed, "; "));
    } else {
      decision = "none:";
    }
  }
  const std::string decided = exchange(call + "/decision", decision).front();
  LT_CHECK(!starts_with(decided, kErrorTag), "{}", decided.substr(6));
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
