// Training checkpoints on disk: a checkpoint is a named set of stateful parts, each saving itself
// through a CheckpointWriter into files of one step directory run_dir/checkpoints/step_NNNNNNNN/
// (which parts and files a training run has is trainer/training_state's). Saving is
// atomic: files go into a hidden temporary directory, are fsynced (each hashed while it is
// written), a COMPLETE marker listing every file's size, SHA-256 and writing rank is written last,
// once every rank's files are durable, and only then is the directory renamed into place, so a
// kill -9 at any moment never damages an earlier checkpoint. An asynchronous save snapshots the
// parts to host memory and writes on a background thread. Resume picks the newest complete step
// whose checksums verify (each rank verifying the files its rank wrote) and falls back to older
// ones with a warning. Not the policy of when to save (the trainer), not the parts' names and
// contents (trainer/training_state).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/file_io.h"

namespace longtune::model {
class SafetensorsFile;
}

namespace longtune::dist {
class ProcessGroup;
}

namespace longtune::trainer {


// One file of a checkpoint as written: its name, size and SHA-256 (computed while writing).
struct WrittenFile {
  std::string name;
  FileDigest digest;
};

// Collects the files of one checkpoint while parts save themselves, then writes them all at once in
// finish_writing(), several files side by side (each one's SHA-256 is a serial pass, so a rank's
// weights and optimizer files are hashed on different cores). kBorrow keeps the CPU tensors that
// are put as they are (device ones are copied to the host): the caller leaves them unchanged until
// finish_writing(). kSnapshot copies what is put into host memory (CUDA tensors into pinned memory,
// then one synchronisation in finish_snapshot(); CPU tensors cloned), so the parts may change at
// once, and finish_writing() (on any thread; it runs no device work) writes the same bytes later.
class CheckpointWriter {
 public:
  enum class Mode { kBorrow, kSnapshot };
  explicit CheckpointWriter(std::filesystem::path directory, Mode mode = Mode::kBorrow);
  ~CheckpointWriter();
  // <part>.safetensors with these tensors (copied to CPU as they are; dtype kept bit for bit).
  void put_tensors(const std::string& part, const std::vector<std::pair<std::string, at::Tensor>>& tensors);
  // <part>.json holding `json_text` verbatim.
  void put_json(const std::string& part, const std::string& json_text);
  // A verbatim file named `file_name` (e.g. config.resolved.yaml).
  void put_file(const std::string& file_name, const std::string& content);
  // kSnapshot: waits for the device-to-host copies of everything put so far.
  void finish_snapshot();
  // Writes every file put (each fsynced; kBorrow: up to kParallelFiles at a time, largest first;
  // kSnapshot: one at a time, as it runs beside training), freeing
  // each one's host copy once it is on disk; then fsyncs the directory once, so every file put is
  // durable under its name. A failure names the file.
  static constexpr size_t kParallelFiles = 4;
  void finish_writing();
  // Names of every file put, in order.
  const std::vector<std::string>& files() const { return files_; }
  // The files written so far, with their digests.
  const std::vector<WrittenFile>& written() const { return written_; }
  const std::filesystem::path& directory() const { return directory_; }

 private:
  struct Snapshot;
  void add_file(const std::string& file_name);
  void put_file_named(const std::string& file_name, const std::string& content);
  std::filesystem::path directory_;
  Mode mode_;
  std::vector<std::string> files_;
  std::vector<WrittenFile> written_;
  std::vector<Snapshot> snapshot_;
  std::vector<int> copy_devices_;  // CUDA devices with copies into pinned memory still in flight
};

// Reads the files of a complete checkpoint. Every accessor throws longtune::Error naming the
// checkpoint directory and the missing part/tensor.
class CheckpointReader {
 public:
  explicit CheckpointReader(std::filesystem::path directory);
  ~CheckpointReader();
  bool has_part(const std::string& part) const;  // <part>.safetensors or <part>.json exists
  std::vector<std::string> tensor_names(const std::string& part) const;
  at::Tensor tensor(const std::string& part, const std::string& name) const;  // CPU, owned copy
  std::string json(const std::string& part) const;
  std::string file(const std::string& file_name) const;
  const std::filesystem::path& directory() const { return directory_; }

 private:
  const model::SafetensorsFile& tensors_file(const std::string& part) const;
  std::filesystem::path directory_;
  mutable std::map<std::string, std::unique_ptr<model::SafetensorsFile>> open_;
};

// One piece of training state that goes into checkpoints.
class Stateful {
 public:
  virtual ~Stateful() = default;
  virtual void save(CheckpointWriter& writer) const = 0;
  virtual void load(const CheckpointReader& reader) = 0;
};

enum class SaveMode { kSync, kAsync };

class CheckpointManager {
 public:
  // Checkpoints live in run_dir/checkpoints/. keep_last >= 1 complete checkpoints are kept.
  CheckpointManager(std::filesystem::path run_dir, int64_t keep_last);
  // Waits for an asynchronous save still in flight (logging, not throwing, its error).
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // Saves every part atomically as step `step` (replacing an existing step directory of that
  // number), then deletes complete checkpoints beyond keep_last and stale temporaries. Returns
  // the final directory. With a process group every rank calls it with its own parts (file names
  // must differ between ranks): rank 0 makes the temporary directory, every rank writes and hashes
  // its files, and only after all have them durable does rank 0 write COMPLETE and rename; the run
  // directory must be on a file system every rank shares. First waits for the previous save.
  // kAsync returns once the parts are snapshotted to host memory; a background thread writes them,
  // tells rank 0 through the group's store (all_gather_strings, never a backend collective), and
  // rank 0 commits; the checkpoint is in place only after wait(). An error there surfaces from the
  // next save() or wait(), naming the checkpoint. With a group, every rank uses the same mode.
  std::filesystem::path save(int64_t step, const std::map<std::string, const Stateful*>& parts,
                             dist::ProcessGroup* group = nullptr, SaveMode mode = SaveMode::kSync);
  // Returns when no save is in flight; rethrows the error of an asynchronous one (once).
  void wait();
  // Whether an asynchronous save has been started and not yet waited for.
  bool save_in_flight() const { return writer_thread_.joinable(); }

  // Complete checkpoints (those with a COMPLETE marker), newest first. Checksums not verified.
  std::vector<std::filesystem::path> list_complete() const;
  // Re-hashes every file listed in `directory`'s COMPLETE marker (sizes first); on mismatch or a
  // missing file returns false and sets `why`.
  static bool verify(const std::filesystem::path& directory, std::string* why = nullptr);
  // Rank `rank` of `world`'s share of verify(): the files the marker records as written by a rank
  // r with r % world == rank (files of an old marker without ranks: balanced by size); with
  // `hash` false only their sizes. Returns "" when they check out, else why not.
  static std::string verify_share(const std::filesystem::path& directory, int rank, int world, bool hash);
  // What to resume from: "never" -> nullopt; "auto" -> the newest complete checkpoint that verifies
  // (logging a warning for each damaged newer one it skips, and for each step directory without
  // a COMPLETE marker), nullopt if there are no complete checkpoints, longtune::Error if there are
  // some but none verifies (silently restarting would discard the run); otherwise a path to a
  // checkpoint directory (a bare "step_NNNNNNNN" also names one in checkpoints_dir()), which must
  // be complete and verify (else longtune::Error). One process: verify_share with world 1.
  std::optional<std::filesystem::path> find_resume(const std::string& resume);
  // The same decision with the verification spread over the ranks: every rank checks the sizes,
  // then hashes, of its share of each candidate; the verdicts are gathered through the store,
  // and rank 0's decision is shared with every rank.
  std::optional<std::filesystem::path> find_resume(const std::string& resume, dist::ProcessGroup& group);
  // Loads every part from `directory`; a part the checkpoint lacks is an error naming it. Does not
  // re-verify checksums (find_resume did).
  static void load(const std::filesystem::path& directory, const std::map<std::string, Stateful*>& parts);
  // Whether `directory` holds the completion marker (a complete checkpoint; checksums not verified).
  static bool is_complete(const std::filesystem::path& directory);
  // The step number recorded in `directory`'s COMPLETE marker.
  static int64_t step_of(const std::filesystem::path& directory);

  const std::filesystem::path& checkpoints_dir() const { return checkpoints_dir_; }

 private:
  struct SaveJob;
  using Exchange = std::function<std::vector<std::string>(const std::string& key, const std::string& value)>;
  // find_resume on rank `rank` of `world`, whose verdicts `exchange` gathers.
  std::optional<std::filesystem::path> resolve_resume(const std::string& resume, int rank, int world,
                                                      const Exchange& exchange);
  // Writes (kSnapshot: the snapshot), exchanges the listings, commits on rank 0 and learns the
  // outcome on the others: the part of a save that may run on the background thread.
  void finish_save(SaveJob& job) const;
  // Deletes complete checkpoints beyond keep_last (never `just_written`) and stale temporaries.
  void prune(const std::filesystem::path& just_written) const;
  std::filesystem::path checkpoints_dir_;
  int64_t keep_last_;
  int64_t collective_calls_ = 0;  // makes each call's store keys unique
  std::thread writer_thread_;     // the asynchronous save in flight
  std::exception_ptr writer_error_;
  std::filesystem::path in_flight_;  // its final directory, for messages
};

}  // namespace longtune::trainer
