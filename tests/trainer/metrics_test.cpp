// metrics.jsonl records (the writer's exact lines, the reader's round trip and its tolerance of
// torn and older lines), rewinding (torn last line included), the FLOPs count worked out by hand,
// and the peak-FLOPs table and CPU measurement.
#include "trainer/metrics.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "tests/test_support.h"

namespace longtune::trainer {
namespace {

namespace fs = std::filesystem;

TrainRecord train_record(int64_t step) {
  return TrainRecord{step, 5.5 - 0.25 * double(step), 2e-5, 0.75, 1024 * step, 1234.56, 0.123456, 4096, 2048, 1.5, false};
}

TEST(MetricsLog, AppendsOneLinePerRecord) {
  testing::TempDir dir;
  MetricsLog log(dir.path() / "run" / "metrics.jsonl", /*enabled=*/true);
  EXPECT_TRUE(fs::exists(log.path()));
  log.write(train_record(1));
  log.write(EvalRecord{1, 5.0, 148.4, 512, std::nullopt});
  EXPECT_EQ(testing::read_bytes(log.path()),
            "{\"kind\": \"train\", \"step\": 1, \"loss\": 5.25, \"lr\": 2e-05, \"grad_norm\": 0.75, \"tokens\": 1024, "
            "\"tokens_per_s\": 1234.6, \"mfu\": 0.12346, \"host_peak_bytes\": 4096, \"device_peak_bytes\": 2048, "
            "\"elapsed_s\": 1.500, "
            "\"skipped\": false}\n"
            "{\"kind\": \"eval\", \"step\": 1, \"val_loss\": 5, \"val_ppl\": 148.4, \"val_tokens\": 512}\n");
  // Reopening appends.
  MetricsLog again(log.path(), true);
  again.write(train_record(3));
  EXPECT_NE(testing::read_bytes(log.path()).find("\"step\": 3, "), std::string::npos);
}

TEST(MetricsLog, DisabledWritesNothing) {
  testing::TempDir dir;
  MetricsLog log(dir.path() / "metrics.jsonl", /*enabled=*/false);
  log.write(train_record(1));
  log.truncate_after(0);
  EXPECT_FALSE(fs::exists(dir.path() / "metrics.jsonl"));
}

TEST(MetricsReader, ReadsBackWhatTheWriterWrote) {
  testing::TempDir dir;
  MetricsLog log(dir.path() / "metrics.jsonl", true);
  TrainRecord skipped = train_record(2);
  skipped.skipped = true;
  log.write(train_record(1));
  log.write(skipped);
  log.write(EvalRecord{2, 5.0, 148.4, 512, 4096});
  const MetricsHistory history = read_metrics(log.path());
  ASSERT_EQ(history.train.size(), 2u);
  ASSERT_EQ(history.eval.size(), 1u);
  const TrainRecord& r = history.train[1];
  EXPECT_EQ(r.step, 2);
  EXPECT_EQ(r.loss, 5.0);
  EXPECT_EQ(r.lr, 2e-5);
  EXPECT_EQ(r.grad_norm, 0.75);
  EXPECT_EQ(r.tokens, 2048);
  EXPECT_EQ(r.host_peak_bytes, 4096);
  EXPECT_EQ(r.device_peak_bytes, 2048);
  EXPECT_TRUE(r.skipped);
  EXPECT_FALSE(history.train[0].skipped);
  EXPECT_EQ(history.eval[0].val_ppl, 148.4);
  EXPECT_EQ(history.eval[0].val_tokens, 512);
  EXPECT_EQ(history.eval[0].window, 4096);
}

TEST(MetricsReader, SkipsTornAndForeignLinesAndReadsOlderRecords) {
  testing::TempDir dir;
  dir.write("metrics.jsonl",
            "{\"step\": 1, \"loss\": 5.5}\n"                        // before "kind": train
            "{\"eval\": true, \"step\": 1, \"val_loss\": 5.0}\n"     // before "kind": eval
            "{\"kind\": \"other\", \"step\": 1}\n"                   // not ours
            "{\"kind\": \"train\", \"loss\": 1.0}\n"                 // no step
            "{\"kind\": \"train\", \"step\": 2, \"loss\": NaN}\n"   // JSON cannot spell NaN
            "{\"kind\": \"train\", \"st");                          // torn
  const MetricsHistory history = read_metrics(dir.path() / "metrics.jsonl");
  ASSERT_EQ(history.train.size(), 1u);
  EXPECT_EQ(history.train[0].loss, 5.5);
  EXPECT_TRUE(std::isnan(history.train[0].lr)) << "a field the line lacks reads as NaN";
  ASSERT_EQ(history.eval.size(), 1u);
  EXPECT_EQ(history.eval[0].val_loss, 5.0);
  EXPECT_FALSE(history.eval[0].window.has_value());
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
  log.write(train_record(4));
  log.truncate_after(4);
  EXPECT_EQ(testing::read_bytes(log.path()), kept + to_json_line(train_record(4)) + "\n");
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
