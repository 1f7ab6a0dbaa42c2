"""Host memory per rank of a sharded launch: `longtune train` under `longtune-run --nproc-per-node N`
(default 8) on Gloo, full_shard + bf16_mixed, from a bf16 HF checkpoint of about 134M parameters
(vocab 32000, d 768, FFN 2048, 12 layers, untied head), against the same launch from a tiny bf16
HF checkpoint (vocab 32000, d 64, 2 layers) that measures what every rank costs regardless of the
model (LibTorch, Gloo, the data reader).

Usage (from the repository root, after scripts/build.sh):
    eval "$(scripts/setup.sh)"
    $LONGTUNE_PYTHON bench/load_memory_bench.py [--ranks 8] [--longtune-bin build/bin] [--work-dir D]

Both checkpoints are random LlamaForCausalLM models saved by transformers in bfloat16. Each launch
trains one step (seq_len 128, one sequence per rank) and saves its checkpoint, so its peak holds
loading, a step with AdamW state, and a save. Every worker runs under a small wrapper that records
its peak resident set (getrusage of the worker, which is the wrapper's only child). The bound the
sharded load must keep: excess peak RSS (134M launch less tiny launch, per rank) within 1.5x the
rank's share of the training state (16 bytes per parameter over the ranks: fp32 master, fp32
gradient, two fp32 AdamW moments) plus two gathered units in bf16. Prints one table and a last line
`max_excess_over_bound R` (the worst rank's excess over that bound; <= 1 holds).
"""
import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "134m": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=12),
    "tiny": dict(vocab_size=32000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4),
}
SEQ_LEN = 128


def wrapper_main(argv):
    """Runs argv[1:] as the only child, then writes its peak RSS to argv[0]/rank_<RANK>.json."""
    out_dir, command = Path(argv[0]), argv[1:]
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    code = child.wait()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    (out_dir / f"rank_{os.environ.get('RANK', '0')}.json").write_text(json.dumps({"peak_rss": peak}))
    return code if code >= 0 else 128 - code


def make_checkpoint(shape, directory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=SEQ_LEN, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    return sum(p.numel() for p in model.parameters()), model


def largest_unit(model):
    """Elements of the largest unit (embedding, one layer, or final norm + head)."""
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    embed = model.model.embed_tokens.weight.numel()
    head = model.lm_head.weight.numel() + model.model.norm.weight.numel()
    return max(layer, embed, head)


def prepare_tokens(bin_dir, work):
    import random
    rng = random.Random(0)
    jsonl = work / "docs.jsonl"
    with open(jsonl, "w") as f:
        for _ in range(64):
            f.write(json.dumps({"ids": [rng.randrange(3, 32000) for _ in range(4 * SEQ_LEN)]}) + "\n")
    subprocess.run([str(bin_dir / "longtune"), "import-tokens", "--input", str(jsonl), "--out", str(work / "data"),
                    "--vocab-size", "32000", "--bos-id", "1", "--eos-id", "2"], check=True,
                   stdout=subprocess.DEVNULL)
    return work / "data"


def job_yaml(source, data, run_dir):
    return f"""model:
  source: "{source}"
  dtype: bfloat16
data:
  train: {data}
  seq_len: {SEQ_LEN}
optim:
  lr: 1.0e-4
train:
  steps: 1
  global_batch: RANKS
  micro_batch: 1
  precision: bf16_mixed
  cpu_threads: 1
  eval_every: 0
  run_dir: {run_dir}
checkpoint:
  every: 0
  resume: never
  export_hf_at_end: false
parallel:
  sharding: full_shard
  backend: gloo
eval:
  windows: [{SEQ_LEN}]
  stride: {SEQ_LEN // 2}
"""


def launch(bin_dir, ranks, source, data, work, name):
    out = work / f"rss_{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    job = work / f"{name}.yaml"
    job.write_text(job_yaml(source, data, work / f"run_{name}").replace("RANKS", str(ranks)))
    command = [str(bin_dir / "longtune-run"), "--nproc-per-node", str(ranks), "--standalone",
               sys.executable, str(Path(__file__).resolve()), "--wrap", str(out), "--",
               str(bin_dir / "longtune"), "train", str(job)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} launch failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return [json.loads((out / f"rank_{r}.json").read_text())["peak_rss"] for r in range(ranks)]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--wrap":
        rest = sys.argv[2:]
        split = rest.index("--")
        sys.exit(wrapper_main([rest[0]] + rest[split + 1:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--longtune-bin", default=str(REPO / "build" / "bin"))
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    bin_dir = Path(args.longtune_bin).resolve()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ltload_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    params, model = make_checkpoint("134m", work / "hf_134m")
    unit = largest_unit(model)
    del model
    make_checkpoint("tiny", work / "hf_tiny")
    data = prepare_tokens(bin_dir, work)
    big = launch(bin_dir, args.ranks, work / "hf_134m", data, work, "134m")
    tiny = launch(bin_dir, args.ranks, work / "hf_tiny", data, work, "tiny")
    share = 16 * params / args.ranks
    bound = 1.5 * share + 2 * 2 * unit
    mib = 2 ** 20
    print(f"{params / 1e6:.1f}M parameters over {args.ranks} ranks: state share {share / mib:.0f} MiB per rank, "
          f"largest unit {2 * unit / mib:.0f} MiB in bf16, bound 1.5 x share + 2 units = {bound / mib:.0f} MiB")
    print("| rank | peak RSS 134M (MiB) | peak RSS tiny (MiB) | excess (MiB) | excess / bound |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for r in range(args.ranks):
        excess = big[r] - tiny[r]
        worst = max(worst, excess / bound)
        print(f"| {r} | {big[r] / mib:.0f} | {tiny[r] / mib:.0f} | {excess / mib:.0f} | {excess / bound:.2f} |")
    print(f"max_excess_over_bound {worst:.3f}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
