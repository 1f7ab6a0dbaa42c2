// The job file as `longtune train` reads it (config/job_config over config/yaml_reader): YAML
// syntax, every key and type, validation; an accepted job prints to YAML that reads back equal.
#include "config/job_config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  const auto job = fuzz::accepted([&] { return config::parse_job_config_string(fuzz::input_text(data, size), "fuzz.yaml"); });
  if (!job) return 0;
  // The resolved YAML a run writes must read back as the same job.
  fuzz::require(config::parse_job_config_string(config::to_yaml(*job), "resolved.yaml") == *job);
  fuzz::require(config::differing_settings(*job, *job).empty());
  (void)config::to_table(*job);
  return 0;
}
