// metrics.jsonl rewinding (torn last line included), the FLOPs count worked out by hand, and the
// peak-FLOPs table and CPU measurement.
#include "trainer/metrics.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <iostream>

#include "tests/test_support.h"

namespace longtune::trainer {
namespace {

namespace fs = std::filesystem;

TEST(MetricsLog, AppendsOneLinePerRecord) {
  testing::TempDir dir;
  MetricsLog log(dir.path() / "run" / "metrics.jsonl", /*enabled=*/true);
  EXPECT_TRUE(fs::exists(log.path()));
  log.write(R"({"kind": "train", "step": 1})");
  log.write(R"({"kind": "train", "step": 2})");
  EXPECT_EQ(testing::read_bytes(log.path()), "{\"kind\": \"train\", \"step\": 1}\n{\"kind\": \"train\", \"step\": 2}\n");
  // Reopening appends.
  MetricsLog again(log.path(), true);
  again.write(R"({"kind": "train", "step": 3})");
  EXPECT_NE(testing::read_bytes(log.path()).find("\"step\": 3}\n"), std::string::npos);
}

TEST(MetricsLog, DisabledWritesNothing) {
  testing::TempDir dir;
  MetricsLog log(dir.path() / "metrics.jsonl", /*enabled=*/false);
  log.write(R"({"step": 1})");
  log.truncate_after(0);
  EXPECT_FALSE(fs::exists(dir.path() / "metrics.jsonl"));
}

TEST(MetricsLog, TruncateAfterKeepsStepsUpToKAndDropsTornLine) {
  testing::TempDir dir;
  const std::string kept =
      "{\"kind\": \"train\", \"step\": 1, \"loss\": 5.5}\n"
      "{\"kind\": \"train\", \"step\": 2, \"loss\": 5.25}\n"
      "{\"kind\": \"eval\", \"step\": 2, \"val_loss\": 5.0, \"val_ppl\": 148.4}\n"
      "{\"kind\": \"train\", \"step\": 3, \"loss\": 5.0}\n";
  const std::string dropped =
      "{\"kind\": \"train\", \"step\": 4, \"loss\": 4.75}\n"
      "{\"kind\": \"eval\", \"step\": 4, \"val_loss\": 4.5, \"val_ppl\": 90.0}\n"
      "{\"kind\": \"train\", \"step\": 5, \"loss\": 4.5}\n"
      "{\"kind\": \"train\", \"st";  // killed mid-write
  dir.write("metrics.jsonl", kept + dropped);
  MetricsLog log(dir.path() / "metrics.jsonl", true);
  log.truncate_after(3);
  EXPECT_EQ(testing::read_bytes(log.path()), kept);
  // Appending after the rewind continues the file cleanly; truncating again changes nothing.
  log.write(R"({"kind": "train", "step": 4, "loss": 4.75})");
  log.truncate_after(4);
  EXPECT_EQ(testing::read_bytes(log.path()), kept + "{\"kind\": \"train\", \"step\": 4, \"loss\": 4.75}\n");
  log.truncate_after(0);
  EXPECT_EQ(testing::read_bytes(log.path()), "");
}

TEST(MetricsLog, TruncateAfterOnlyTornLineLeavesWholeRecords) {
  testing::TempDir dir;
  dir.write("metrics.jsonl", "{\"step\": 1}\n{\"step\": 2}\n{\"ste");
  MetricsLog log(dir.path() / "metrics.jsonl", true);
  log.truncate_after(100);
  EXPECT_EQ(testing::read_bytes(log.path()), "{\"step\": 1}\n{\"step\": 2}\n");
}

TEST(MetricsFlops, TinyPresetByHand) {
  // tiny: vocab 512, d 64, ffn 176, 2 layers, 4 heads of 16, 4 kv heads.
  // Per layer: q,k,v,o 4*64*64 = 16384; gate/up/down 3*64*176 = 33792; norms 2*64 = 128 -> 50304.
  // N = 2*50304 + 64 (final norm) + 512*64 (lm_head) = 133440.
  // Attention at seq 128: 12 * 2 layers * 4 heads * 16 * 128 = 196608.
  const model::ModelConfig tiny = model::model_preset("tiny");
  EXPECT_DOUBLE_EQ(training_flops_per_token(tiny, 128), 6.0 * 133440 + 196608);
  // GQA: k and v shrink to 64*32 each -> per layer 46208; N = 92416 + 64 + 32768 = 125248.
  const model::ModelConfig gqa = model::model_preset("tiny-gqa");
  EXPECT_DOUBLE_EQ(training_flops_per_token(gqa, 128), 6.0 * 125248 + 196608);
  // A tied lm_head still costs its matmul.
  model::ModelConfig tied = tiny;
  tied.tie_word_embeddings = true;
  EXPECT_DOUBLE_EQ(training_flops_per_token(tied, 128), training_flops_per_token(tiny, 128));
  // The input embedding is the only thing left out of N.
  EXPECT_EQ(133440 + 512 * 64, tiny.num_parameters());
}

TEST(MetricsFlops, Llama7bMatchesKnownParameterCount) {
  const model::ModelConfig c = model::model_preset("llama-7b");
  // N without the input embedding; with it, the well-known 6.74e9 ("7B").
  const double n = 32.0 * (4.0 * 4096 * 4096 + 3.0 * 4096 * 11008 + 2 * 4096) + 4096 + 32000.0 * 4096;
  EXPECT_DOUBLE_EQ(n, 6607343616.0);
  EXPECT_NEAR(n + 32000.0 * 4096, 6.74e9, 0.01e9);
  EXPECT_EQ(static_cast<int64_t>(n) + 32000 * 4096, c.num_parameters());
  const double attention = 12.0 * 32 * 32 * 128 * 2048;
  EXPECT_DOUBLE_EQ(training_flops_per_token(c, 2048), 6 * n + attention);
  // Position Interpolation to 8192: only the attention term grows.
  EXPECT_DOUBLE_EQ(training_flops_per_token(c, 8192) - training_flops_per_token(c, 2048), 3 * attention);
}

TEST(MetricsPeakFlops, KnownGpuTable) {
  EXPECT_EQ(known_gpu_peak_flops("NVIDIA H100 80GB HBM3", true), 989e12);
  EXPECT_EQ(known_gpu_peak_flops("NVIDIA H100 80GB HBM3", false), 494e12);
  EXPECT_EQ(known_gpu_peak_flops("NVIDIA H100 PCIe", true), 756e12);
  EXPECT_EQ(known_gpu_peak_flops("NVIDIA H200", true), 989e12);
  EXPECT_EQ(known_gpu_peak_flops("NVIDIA A100-SXM4-80GB", true), 312e12);
  EXPECT_EQ(known_gpu_peak_flops("NVIDIA GeForce GTX 1080", true), 0);
  EXPECT_EQ(default_peak_flops("NVIDIA H200", true), 989e12);
}

TEST(MetricsPeakFlops, CpuMeasurementIsPositive) {
  const double flops = measure_cpu_matmul_flops();
  std::cout << "[ info     ] CPU fp32 matmul: " << flops / 1e9 << " GFLOP/s\n";
  EXPECT_GT(flops, 1e8);
  EXPECT_GT(default_peak_flops("", true), 0);
}

TEST(MetricsPeakFlops, CudaMeasurementIsPositive) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const double bf16 = measure_cuda_matmul_flops(true);
  const double fp32 = measure_cuda_matmul_flops(false);
  std::cout << "[ info     ] CUDA matmul: bf16 " << bf16 / 1e12 << " TFLOP/s, fp32 " << fp32 / 1e12 << " TFLOP/s\n";
  EXPECT_GT(bf16, 1e12);
  EXPECT_GT(fp32, 1e11);
}

}  // namespace
}  // namespace longtune::trainer
