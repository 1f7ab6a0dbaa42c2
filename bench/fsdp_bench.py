"""Sharded training throughput and per-rank memory: `longtune train` under `longtune-run` with
parallel.sharding full_shard against PyTorch FSDP2 (`fully_shard` per decoder layer and at the root)
over HF transformers' LlamaForCausalLM under torchrun, both on Gloo, same shapes, on this machine.

Usage (from the repository root, after scripts/build.sh):
    eval "$(scripts/setup.sh)"
    $LONGTUNE_PYTHON bench/fsdp_bench.py [--ranks 2] [--preset demo] [--steps 20] [--reps 2] [--work-dir D]

Both: fp32, seq_len 256, global batch 8 split over the ranks (one micro-batch per rank), one
intra-op thread per rank, AdamW (ours fused; FSDP2's DTensor parameters take the default foreach
path), clip_grad_norm 1.0, no activation checkpointing. Ours: tokens/s from rank 0's metrics.jsonl
(global tokens over the step's wall time, batch reading included); peak memory: the largest peak resident
set of any rank (metrics host_peak_bytes). FSDP2: per step wall time on rank 0 from batch creation
(random ids) to after zero_grad; peak resident set from getrusage on rank 0. Runs alternate (ours,
FSDP2, FSDP2, ours, ...) in fresh processes; the first --warmup steps of each run are dropped; the
table gives median tokens/s of the pooled steps and ours/FSDP2.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import JOB, PRESETS, hf_config, num_parameters, prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fsdp_worker(spec):
    """Runs under torchrun: one rank of the FSDP2 peer; rank 0 prints one JSON line."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaForCausalLM
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf_config(spec["preset"], spec["vocab"], spec["seq_len"])).to(torch.float32)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    generator = torch.Generator().manual_seed(rank)
    per_rank = spec["batch"] // world
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        ids = torch.randint(0, spec["vocab"], (per_rank, spec["seq_len"]), generator=generator)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    if rank == 0:
        print(json.dumps({"times": times, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          "parameters": sum(p.numel() for p in model.parameters())}))  # DTensor: global numel
    dist.destroy_process_group()


def run_ours(bin_dir, args, tokenizer, train_dir, run_dir):
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = {"model.source": f"preset:{args.preset}", "data.train": train_dir, "data.tokenizer": tokenizer,
            "data.seq_len": args.seq_len, "train.global_batch": args.batch,
            "train.micro_batch": args.batch // args.ranks, "train.steps": args.steps, "train.cpu_threads": 1,
            "train.run_dir": run_dir, "parallel.sharding": "full_shard", "parallel.backend": "gloo"}
    cmd = [str(bin_dir / "longtune-run"), "--standalone", "--nproc-per-node", str(args.ranks),
           str(bin_dir / "longtune"), "train", str(JOB)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"longtune failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    return [r["tokens_per_s"] for r in train if r["step"] > args.warmup], max(r["host_peak_bytes"] for r in train)


def run_fsdp(args, vocab):
    spec = dict(preset=args.preset, vocab=vocab, seq_len=args.seq_len, batch=args.batch, steps=args.steps)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
           __file__, "--fsdp-worker", json.dumps(spec)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"FSDP2 peer failed:\n{result.stderr[-3000:]}")
    out = json.loads([l for l in result.stdout.splitlines() if l.startswith("{")][-1])
    if out["parameters"] != num_parameters(args.preset, vocab):
        sys.exit(f"FSDP2 model has {out['parameters']} parameters, ours {num_parameters(args.preset, vocab)}")
    return [args.batch * args.seq_len / t for t in out["times"][args.warmup:]], out["peak_rss"]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--fsdp-worker":
        return fsdp_worker(json.loads(sys.argv[2]))
    import torch
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--longtune-bin", type=Path, default=REPO / "build" / "bin")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.batch % args.ranks:
        parser.error("--batch must divide by --ranks")
    bin_dir = args.longtune_bin.resolve()
    work = args.work_dir.resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="longtune-fsdp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer, train_dir = prepare(str(bin_dir / "longtune"), work)
        import sentencepiece as spm
        vocab = spm.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size()
        print(f"torch {torch.__version__}; {args.ranks} ranks x 1 thread on {os.cpu_count()} cores; preset "
              f"{args.preset} ({num_parameters(args.preset, vocab) / 1e6:.2f}M parameters), fp32, full shard, "
              f"batch {args.batch} x {args.seq_len}; load average {os.getloadavg()[0]:.2f}", flush=True)
        rates, peaks = {"ours": [], "fsdp2": []}, {"ours": [], "fsdp2": []}
        for rep in range(args.reps):
            for who in (("ours", "fsdp2") if rep % 2 == 0 else ("fsdp2", "ours")):
                if who == "ours":
                    r, peak = run_ours(bin_dir, args, tokenizer, train_dir, work / "run")
                else:
                    r, peak = run_fsdp(args, vocab)
                rates[who] += r
                peaks[who].append(peak)
                print(f"  {who:<6} run {rep + 1}: median {statistics.median(r):,.0f} tok/s, rank-0 peak RSS "
                      f"{peak / 2**20:.0f} MiB", file=sys.stderr, flush=True)
        ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["fsdp2"])
        print(f"| implementation | tokens/s (median) | rank-0 peak RSS |\n|---|---|---|")
        print(f"| longtune full_shard | {ours:,.0f} | {max(peaks['ours']) / 2**20:.0f} MiB |")
        print(f"| PyTorch FSDP2 + HF Llama | {theirs:,.0f} | {max(peaks['fsdp2']) / 2**20:.0f} MiB |")
        print(f"ours / FSDP2: {ours / theirs:.2f}x")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
