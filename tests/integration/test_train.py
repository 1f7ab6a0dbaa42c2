"""End-to-end training through the CLI (`longtune train`) on a small generated corpus: kill -9 at
several steps and resume bitwise-exactly, kill -9 in the middle of asynchronous saves never leaves a
checkpoint taken as complete that is not, fallback from a damaged checkpoint, SIGTERM saves and exits
75, NaN policy, gradient accumulation equals one big batch, activation checkpointing changes nothing,
and export-hf --checkpoint loads in HF transformers with equal logits and stores the training dtype."""
import hashlib
import json
import os
import random
import struct
import signal
import subprocess
import time
from pathlib import Path

import pytest

EXIT_PREEMPTED = 75

JOB = """
model:
  source: "preset:tiny"
  dtype: float32
data:
  train: {data}/train
  validation: {data}/validation
  tokenizer: {tokenizer}
  seq_len: 64
  seed: 3
optim:
  lr: 3.0e-3
  fused: true
schedule:
  warmup_steps: 4
  decay: cosine
train:
  steps: 12
  global_batch: 8
  micro_batch: 4
  precision: fp32
  eval_every: 6
  eval_batches: 2
  seed: 5
  run_dir: {run_dir}
  deterministic: true
  cpu_threads: 1
checkpoint:
  every: 2
  keep_last: 3
  resume: auto
parallel:
  sharding: no_shard
eval:
  stride: 32
"""


def job_file(tmp_path, data, run_dir, name="job.yaml"):
    path = tmp_path / name
    path.write_text(JOB.format(run_dir=run_dir, **data))
    return path


def train(longtune, job, *sets, expect=0, timeout=300, nan_loss_at=None):
    # nan_loss_at: steps whose loss is poisoned, through `longtune debug train`'s test seam.
    command = ["train"] if nan_loss_at is None else ["debug", "train", "--nan-loss-at-steps", nan_loss_at]
    cmd = [longtune] + command + [str(job)] + [a for s in sets for a in ("--set", s)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def records(run_dir, kind="train"):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses(run_dir):
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in records(run_dir)]


def final_weights(run_dir, step=12):
    return (Path(run_dir) / "checkpoints" / f"step_{step:08d}" / "model.safetensors").read_bytes()


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, longtune, data):
    tmp = tmp_path_factory.mktemp("reference")
    run_dir = tmp / "run"
    train(longtune, job_file(tmp, data, run_dir))
    return run_dir


def kill_at_step(cmd, run_dir, step, complete=None):
    """Starts cmd, SIGKILLs it as soon as metrics.jsonl shows `step` (mid-training, between saves) and,
    if given, the checkpoint `complete` is in place (saves are asynchronous: one may still be writing)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = Path(run_dir) / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(line).get("step", 0) >= step
                                    for line in metrics.read_text().splitlines() if line.endswith("}")) and \
                (complete is None or (Path(run_dir) / "checkpoints" / complete / "COMPLETE").exists()):
            break
        time.sleep(0.005)
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("kill_steps", [[1], [3], [5, 9], [11]])
def test_kill9_and_resume_is_bitwise_exact(tmp_path, longtune, data, reference_run, kill_steps):
    run_dir = tmp_path / "run"
    job = job_file(tmp_path, data, run_dir)
    for step in kill_steps:
        kill_at_step([longtune, "train", str(job)], run_dir, step)
    train(longtune, job)
    assert losses(run_dir) == losses(reference_run)
    assert final_weights(run_dir) == final_weights(reference_run)
    assert [r["val_loss"] for r in records(run_dir, "eval")] == [r["val_loss"] for r in records(reference_run, "eval")]


def verify_checkpoint(directory):
    """What resume checks, done here independently: every file the COMPLETE marker lists has its size and SHA-256."""
    marker = json.loads((directory / "COMPLETE").read_text())
    for name, entry in marker["files"].items():
        data = (directory / name).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], (directory, name)


def test_kill9_during_async_saves_never_leaves_a_false_complete_checkpoint(tmp_path, longtune, data, reference_run):
    run_dir = tmp_path / "run"
    job = job_file(tmp_path, data, run_dir)
    checkpoints = run_dir / "checkpoints"
    cmd = [longtune, "train", str(job), "--set", "checkpoint.every=1", "--set", "checkpoint.async_save=true"]
    rng = random.Random(0)
    mid_save = 0
    for _ in range(4):
        # Kill the moment a save's temporary directory shows up (its background write under way),
        # or a few milliseconds later.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay, deadline, seen = rng.uniform(0, 0.02), time.time() + 120, False
        while time.time() < deadline and proc.poll() is None and not seen:
            seen = checkpoints.exists() and any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())
            time.sleep(0.0005)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        mid_save += seen and any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())
        for directory in checkpoints.glob("step_*"):
            # Under its final name only when complete, and then every file checks out.
            assert (directory / "COMPLETE").exists(), directory
            verify_checkpoint(directory)
    assert mid_save > 0  # some kills did land during a save
    train(longtune, job, "checkpoint.every=1")
    assert losses(run_dir) == losses(reference_run)
    assert final_weights(run_dir) == final_weights(reference_run)


def safetensors_dtypes(path):
    header = path.read_bytes()
    (length,) = struct.unpack("<Q", header[:8])
    return {v["dtype"] for k, v in json.loads(header[8:8 + length]).items() if k != "__metadata__"}


def test_export_stores_the_training_dtype_unless_told_otherwise(tmp_path, longtune, data):
    run_dir = tmp_path / "bf16"
    job = job_file(tmp_path, data, run_dir)
    train(longtune, job, "train.precision=bf16_mixed", "model.dtype=bfloat16", "train.steps=2",
          "checkpoint.export_hf_at_end=true")
    assert {d for f in (run_dir / "hf").glob("*.safetensors") for d in safetensors_dtypes(f)} == {"BF16"}
    out = tmp_path / "fp32"
    subprocess.run([longtune, "export-hf", "--checkpoint", str(run_dir), "--out", str(out), "--dtype", "float32"],
                   check=True, capture_output=True)
    assert {d for f in out.glob("*.safetensors") for d in safetensors_dtypes(f)} == {"F32"}


def test_damaged_newest_checkpoint_falls_back(tmp_path, longtune, data, reference_run):
    run_dir = tmp_path / "run"
    job = job_file(tmp_path, data, run_dir)
    kill_at_step([longtune, "train", str(job)], run_dir, 9, complete="step_00000008")
    newest = run_dir / "checkpoints" / "step_00000008" / "model.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[-3] ^= 0xFF
    newest.write_bytes(bytes(raw))
    result = train(longtune, job)
    assert "step_00000008" in result.stderr
    assert "resumed from" in result.stderr and "step_00000006" in result.stderr
    assert losses(run_dir) == losses(reference_run)
    assert final_weights(run_dir) == final_weights(reference_run)


def test_sigterm_saves_and_exits_75(tmp_path, longtune, data, reference_run):
    run_dir = tmp_path / "run"
    job = job_file(tmp_path, data, run_dir)
    proc = subprocess.Popen([longtune, "train", str(job), "--set", "checkpoint.every=100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err
    saved = sorted((run_dir / "checkpoints").glob("step_*"))
    assert len(saved) == 1 and (saved[0] / "COMPLETE").exists()
    stopped_at = int(saved[0].name.split("_")[1])
    assert stopped_at < 12 and f"stopped after step {stopped_at}" in err
    train(longtune, job, "checkpoint.every=100")
    assert losses(run_dir) == losses(reference_run)


def test_nan_stop_names_the_step_and_saves_nothing_poisoned(tmp_path, longtune, data):
    run_dir = tmp_path / "run"
    job = job_file(tmp_path, data, run_dir)
    result = train(longtune, job, nan_loss_at="5", expect=1)
    assert "step 5: non-finite loss" in result.stderr
    steps = sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))
    assert steps == [2, 4]


def test_nan_skip_counts_and_continues(tmp_path, longtune, data):
    run_dir = tmp_path / "run"
    job = job_file(tmp_path, data, run_dir)
    train(longtune, job, "train.nan_policy=skip", "train.max_skipped_steps=2", nan_loss_at="3,7")
    skipped = [r["step"] for r in records(run_dir) if r["skipped"]]
    assert skipped == [3, 7]
    trainer_state = json.loads((run_dir / "checkpoints" / "step_00000012" / "trainer.json").read_text())
    assert trainer_state["skipped_steps"] == 2
    result = train(longtune, job_file(tmp_path, data, tmp_path / "run2", "job2.yaml"),
                   "train.nan_policy=skip", "train.max_skipped_steps=2", nan_loss_at="3,4,5", expect=1)
    assert "over train.max_skipped_steps = 2" in result.stderr


def test_accumulation_equals_one_big_batch(tmp_path, longtune, data):
    runs = {}
    for micro in (1, 2, 8):
        run_dir = tmp_path / f"micro{micro}"
        train(longtune, job_file(tmp_path, data, run_dir, f"job{micro}.yaml"), f"train.micro_batch={micro}",
              "train.steps=4")
        runs[micro] = losses(run_dir)
    for micro in (1, 2):
        for (s, loss, gnorm, lr), (s8, loss8, gnorm8, lr8) in zip(runs[micro], runs[8]):
            assert s == s8 and lr == lr8
            assert loss == pytest.approx(loss8, rel=1e-5, abs=0)
            assert gnorm == pytest.approx(gnorm8, rel=1e-4, abs=0)


def test_activation_checkpointing_changes_nothing(tmp_path, longtune, data):
    plain, ckpt = tmp_path / "plain", tmp_path / "ckpt"
    train(longtune, job_file(tmp_path, data, plain, "a.yaml"), "train.steps=4")
    train(longtune, job_file(tmp_path, data, ckpt, "b.yaml"), "train.steps=4", "model.activation_checkpointing=true")
    assert losses(plain) == losses(ckpt)


def test_export_hf_from_checkpoint_loads_in_transformers(tmp_path, longtune, data, reference_run):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    subprocess.run([longtune, "export-hf", "--checkpoint", str(reference_run), "--out", str(out)],
                   check=True, capture_output=True)
    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == 64
    assert (out / "tokenizer.model").exists()
    model = transformers.LlamaForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32).eval()
    ids = torch.randint(3, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    tokens = tmp_path / "ids.txt"
    tokens.write_text(" ".join(map(str, ids.flatten().tolist())))
    dump = tmp_path / "ours.safetensors"
    subprocess.run([longtune, "debug", "logits", "--model", str(reference_run), "--tokens", str(tokens),
                    "--batch", "2", "--out", str(dump)], check=True, capture_output=True)
    from safetensors.torch import load_file
    ours = load_file(str(dump))["logits"]
    with torch.no_grad():
        theirs = model(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def test_pi_fine_tune_from_checkpoint_records_scaling(tmp_path, longtune, data, reference_run):
    run_dir = tmp_path / "pi"
    job = job_file(tmp_path, data, run_dir)
    train(longtune, job, f"model.source={reference_run}", "model.rope_scaling.type=linear",
          "model.rope_scaling.factor=4", "data.seq_len=256", "train.steps=2", "train.global_batch=2",
          "train.micro_batch=1", "checkpoint.export_hf_at_end=true", "eval.stride=128")
    config = json.loads((run_dir / "hf" / "config.json").read_text())
    assert config["max_position_embeddings"] == 256
    assert config["rope_scaling"]["type"] == "linear" and config["rope_scaling"]["factor"] == 4.0


def test_validation_runs_the_sliding_window_protocol(tmp_path, longtune, data, reference_run):
    """Validation during training is `eval perplexity` at the job's eval: windows: one record per
    window, equal to the offline command on the checkpoint of the same step."""
    run_dir = tmp_path / "run"
    train(longtune, job_file(tmp_path, data, run_dir), f"model.source={reference_run}", "train.steps=2",
          "train.eval_every=2", "checkpoint.every=2", "eval.windows=[32, 64]", "eval.stride_fraction=0.5",
          "eval.max_documents=1", "eval.truncate_tokens=700")
    evals = records(run_dir, "eval")
    assert [(r["step"], r["window"]) for r in evals] == [(2, 32), (2, 64)]
    cmd = [longtune, "eval", "perplexity", "--quiet", "--model", str(run_dir / "checkpoints" / "step_00000002"),
           "--data", data["data"], "--split", "validation", "--windows", "32,64", "--stride-fraction", "0.5",
           "--max-documents", "1", "--truncate", "700", "--dtype", "float32"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    offline = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["window"] for r in offline] == [32, 64]
    for ours, theirs in zip(evals, offline):
        assert ours["val_tokens"] == theirs["scored_tokens"] == 700
        assert abs(ours["val_ppl"] - theirs["ppl"]) <= 1e-5 * theirs["ppl"], (ours, theirs)
