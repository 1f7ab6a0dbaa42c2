// Training checkpoints on disk: a checkpoint is a named set of stateful parts, each saving itself
// through a CheckpointWriter into files of one step directory run_dir/checkpoints/step_NNNNNNNN/
// (which parts and files a training run has is trainer/training_state's). Saving is
// atomic: files go into a hidden temporary directory, are fsynced, a COMPLETE marker listing every
// file's size and SHA-256 is written last, and only then is the directory renamed into place, so a
// kill -9 at any moment never damages an earlier checkpoint. Resume picks the newest complete step
// whose checksums verify and falls back to older ones with a warning. Not the policy of when to save
// (the trainer), not the parts' names and contents (trainer/training_state).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace longtune::model {
class SafetensorsFile;
}

namespace longtune::dist {
class ProcessGroup;
}

namespace longtune::trainer {


// Collects the files of one checkpoint while parts save themselves.
class CheckpointWriter {
 public:
  explicit CheckpointWriter(std::filesystem::path directory);
  // <part>.safetensors with these tensors (copied to CPU as they are; dtype kept bit for bit).
  void put_tensors(const std::string& part, const std::vector<std::pair<std::string, at::Tensor>>& tensors);
  // <part>.json holding `json_text` verbatim.
  void put_json(const std::string& part, const std::string& json_text);
  // A verbatim file named `file_name` (e.g. config.resolved.yaml).
  void put_file(const std::string& file_name, const std::string& content);
  const std::vector<std::string>& files() const { return files_; }
  const std::filesystem::path& directory() const { return directory_; }

 private:
  void add_file(const std::string& file_name);
  std::filesystem::path directory_;
  std::vector<std::string> files_;
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

class CheckpointManager {
 public:
  // Checkpoints live in run_dir/checkpoints/. keep_last >= 1 complete checkpoints are kept.
  CheckpointManager(std::filesystem::path run_dir, int64_t keep_last);

  // Saves every part atomically as step `step` (replacing an existing step directory of that
  // number), then deletes complete checkpoints beyond keep_last and stale temporaries. Returns
  // the final directory. With a process group every rank calls it with its own parts (file names
  // must differ between ranks): rank 0 makes the temporary directory, every rank writes and hashes
  // its files, and only after all have finished does rank 0 write COMPLETE and rename; the run
  // directory must be on a file system every rank shares.
  std::filesystem::path save(int64_t step, const std::map<std::string, const Stateful*>& parts,
                             dist::ProcessGroup* group = nullptr);

  // Complete checkpoints (those with a COMPLETE marker), newest first. Checksums not verified.
  std::vector<std::filesystem::path> list_complete() const;
  // Re-hashes every file listed in `directory`'s COMPLETE marker; on mismatch or a missing file
  // returns false and sets `why`.
  static bool verify(const std::filesystem::path& directory, std::string* why = nullptr);
  // What to resume from: "never" -> nullopt; "auto" -> the newest complete checkpoint that verifies
  // (logging a warning for each damaged newer one it skips), nullopt if there are no complete
  // checkpoints, longtune::Error if there are some but none verifies (silently restarting would
  // discard the run); otherwise a path to a checkpoint directory (a bare "step_NNNNNNNN" also
  // names one in checkpoints_dir()), which must be complete and verify (else longtune::Error).
  std::optional<std::filesystem::path> find_resume(const std::string& resume) const;
  // The same decision taken once by rank 0 (which verifies) and shared with every rank.
  std::optional<std::filesystem::path> find_resume(const std::string& resume, dist::ProcessGroup& group) const;
  // Loads every part from `directory`; a part the checkpoint lacks is an error naming it. Does not
  // re-verify checksums (find_resume did).
  static void load(const std::filesystem::path& directory, const std::map<std::string, Stateful*>& parts);
  // Whether `directory` holds the completion marker (a complete checkpoint; checksums not verified).
  static bool is_complete(const std::filesystem::path& directory);
  // The step number recorded in `directory`'s COMPLETE marker.
  static int64_t step_of(const std::filesystem::path& directory);

  const std::filesystem::path& checkpoints_dir() const { return checkpoints_dir_; }

 private:
  // Deletes complete checkpoints beyond keep_last (never `just_written`) and stale temporaries.
  void prune(const std::filesystem::path& just_written) const;
  std::filesystem::path checkpoints_dir_;
  int64_t keep_last_;
  int64_t collective_calls_ = 0;  // makes each call's store keys unique
};

}  // namespace longtune::trainer
