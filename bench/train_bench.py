"""Training throughput of `longtune train` against HF transformers' LlamaForCausalLM in a plain PyTorch loop.

Usage (from the repository root, after scripts/build.sh):
    eval "$(scripts/setup.sh)"
    $LONGTUNE_PYTHON bench/train_bench.py [--longtune-bin build/bin] [--work-dir /tmp/lttrain] \
        [--steps 30] [--reps 2] [--configs demo,small] [--threads N] [--max-busy 0.15 --retries 2]

It builds the embedded corpus and its tokenizer (scripts/make_corpus.sh) and prepares it
(`longtune prepare-data`) in WORK_DIR (default: a temporary folder, removed at the end; a given
WORK_DIR is kept and its prepared data reused). Then, for each model preset, it trains --reps times
with each implementation, alternating (ours, HF, then HF, ours, ...), each run in a fresh process:
  ours  `longtune train bench/train_bench.yaml` with model.source preset:NAME, the prepared train
        split, train.steps, train.cpu_threads and a fresh run_dir set by --set. Step times are the
        tokens_per_s of the run's metrics.jsonl (global_batch * seq_len / wall time of the step: batch
        reading, forward, backward, clipping, optimizer step). The checkpoint written after the last
        step is outside every step's time.
  hf    LlamaForCausalLM with the same shapes (the LlamaConfig below mirrors the preset, and the model
        config our run saves in its checkpoint is checked against it), random init, attention "sdpa",
        fp32, use_cache off; per step: a random batch of token ids uniform in [0, vocab) (the model's
        throughput does not depend on the ids), loss = model(input_ids, labels=input_ids).loss
        (HF shifts the labels: L - 1 predicted positions per sequence where ours has L, of L + 1 tokens),
        backward, clip_grad_norm_(1.0), torch.optim.AdamW(fused=True, betas (0.9, 0.95), wd 0) step,
        zero_grad; each step timed with time.perf_counter from batch creation to after zero_grad.
Both: fp32, seq_len 256, batch 8 (global = micro, no accumulation), no activation checkpointing,
deterministic kernels off, --threads intra-op threads (default: this torch's get_num_threads(), all
cores). The first --warmup steps (default 5) of every run are dropped; the table gives the median
tokens/s over the remaining steps of all runs pooled, and ours/HF. Per-run medians go to stderr.

The machine's other load skews the figures, so the script reports it: before each run the busy
fraction of all cores (over 1 s; over 3 s when waiting for --max-busy), and during each run the
cores that other processes used (machine busy time less the run's own CPU time, over its wall time;
the table's last column is the largest over a preset's runs). With --max-busy F it waits (up to
--max-wait s) before each run until the cores are at most F busy, and with --retries N it reruns a
run (up to N times) during which other processes used more than F of the cores.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "bench" / "train_bench.yaml"

# model/config.cpp's presets (head_dim = hidden / heads, rope theta 10000, untied embeddings); the
# vocabulary comes from the tokenizer (4096 pieces) and the window is data.seq_len.
PRESETS = {
    "demo": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False),
}


def cpu_times():
    """(busy, total) seconds of all cores since boot, from /proc/stat (busy excludes idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - fields[3] - fields[4]) / hz, total / hz


def busy_fraction(interval=1.0):
    b0, t0 = cpu_times()
    time.sleep(interval)
    b1, t1 = cpu_times()
    return (b1 - b0) / max(t1 - t0, 1e-9)


def wait_for_quiet(max_busy, max_wait):
    start = time.monotonic()
    busy = busy_fraction(3.0)  # 3 s, so that the gaps between another job's steps do not pass for quiet
    while busy > max_busy and time.monotonic() - start < max_wait:
        busy = busy_fraction(3.0)
    if busy > max_busy:
        print(f"  warning: machine still {busy:.0%} busy after {max_wait:.0f} s; running anyway", file=sys.stderr)
    return busy


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(fn):
    """Runs fn() (which runs one child process) and returns (result, cores used by other processes)."""
    c0, (b0, _), w0 = children_cpu(), cpu_times(), time.monotonic()
    result = fn()
    c1, (b1, _), w1 = children_cpu(), cpu_times(), time.monotonic()
    return result, max(0.0, ((b1 - b0) - (c1 - c0)) / max(w1 - w0, 1e-9))


def prepare(longtune, work):
    corpus, tokens = work / "corpus", work / "tokens"
    subprocess.run(["bash", str(REPO / "scripts" / "make_corpus.sh"), str(corpus), longtune], check=True,
                   stdout=subprocess.DEVNULL)
    if not (tokens / "manifest.json").exists():
        subprocess.run([longtune, "prepare-data", "--input", str(corpus), "--tokenizer",
                        str(corpus / "tokenizer.model"), "--out", str(tokens), "--quiet"], check=True,
                       stdout=subprocess.DEVNULL)
    return corpus / "tokenizer.model", tokens / "train"


def run_ours(longtune, preset, tokenizer, train_dir, run_dir, args):
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = {"model.source": f"preset:{preset}", "data.train": train_dir, "data.tokenizer": tokenizer,
            "data.seq_len": args.seq_len, "train.global_batch": args.batch, "train.micro_batch": args.batch,
            "train.steps": args.steps, "train.cpu_threads": args.threads, "train.run_dir": run_dir}
    cmd = [longtune, "train", str(JOB)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"longtune train failed ({' '.join(cmd)}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if r["kind"] == "train" and r["step"] > args.warmup]
    if len(rates) != args.steps - args.warmup:
        sys.exit(f"{run_dir}/metrics.jsonl: expected {args.steps - args.warmup} steps after warm-up, got {len(rates)}")
    return rates


def check_shapes(preset, run_dir, vocab, seq_len):
    """The model config our run saved must be the one the HF side builds."""
    saved = json.loads(next((run_dir / "checkpoints").glob("step_*/model_config.json")).read_text())
    want = dict(PRESETS[preset], vocab_size=vocab, max_position_embeddings=seq_len,
                head_dim=PRESETS[preset]["hidden_size"] // PRESETS[preset]["num_attention_heads"])
    got = {k: saved.get(k) for k in want}
    got["rope_theta"] = saved.get("rope_parameters", {}).get("rope_theta", saved.get("rope_theta"))
    rope_type = (saved.get("rope_parameters") or {}).get("rope_type", "default")
    if got != want or rope_type != "default":
        sys.exit(f"preset {preset}: our model config {got} (rope {rope_type}) differs from the HF side's {want}")


def num_parameters(preset, vocab):
    """ModelConfig::num_parameters (model/config.cpp)."""
    p = PRESETS[preset]
    d, head_dim = p["hidden_size"], p["hidden_size"] // p["num_attention_heads"]
    q, kv = p["num_attention_heads"] * head_dim, p["num_key_value_heads"] * head_dim
    layer = d * q + 2 * d * kv + q * d + 3 * d * p["intermediate_size"] + 2 * d
    embed = vocab * d
    return embed + p["num_hidden_layers"] * layer + d + (0 if p["tie_word_embeddings"] else embed)


def hf_config(preset, vocab, seq_len):
    from transformers import LlamaConfig
    p = dict(PRESETS[preset])
    theta = p.pop("rope_theta")
    return LlamaConfig(vocab_size=vocab, max_position_embeddings=seq_len, hidden_act="silu", attention_bias=False,
                       mlp_bias=False, attention_dropout=0.0, use_cache=False,
                       head_dim=p["hidden_size"] // p["num_attention_heads"],
                       rope_parameters={"rope_type": "default", "rope_theta": theta},
                       attn_implementation="sdpa", dtype="float32", **p)


def hf_worker(spec):
    """Child process: trains the HF model and prints one JSON list of per-step seconds."""
    import torch
    from transformers import LlamaForCausalLM
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    config = hf_config(spec["preset"], spec["vocab"], spec["seq_len"])
    model = LlamaForCausalLM(config).to(torch.float32)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        input_ids = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq_len"]), generator=generator)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            sys.exit("HF loss is not finite")
    print(json.dumps({"times": times, "parameters": sum(p.numel() for p in params)}))


def run_hf(preset, vocab, args):
    spec = dict(preset=preset, vocab=vocab, seq_len=args.seq_len, batch=args.batch, steps=args.steps,
                threads=args.threads)
    result = subprocess.run([sys.executable, __file__, "--hf-worker", json.dumps(spec)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"HF worker failed:\n{result.stderr[-4000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if out["parameters"] != num_parameters(preset, vocab):
        sys.exit(f"HF {preset} model has {out['parameters']} parameters, ours {num_parameters(preset, vocab)}")
    return [args.batch * args.seq_len / t for t in out["times"][args.warmup:]]


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--hf-worker":
        return hf_worker(json.loads(sys.argv[2]))
    import torch
    import transformers
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--longtune-bin", default=str(REPO / "build" / "bin"),
                        help="build/bin folder, or the longtune binary")
    parser.add_argument("--work-dir", type=Path, help="kept, and its prepared data reused (default: temporary)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of every run")
    parser.add_argument("--reps", type=int, default=2, help="runs of each implementation per preset")
    parser.add_argument("--configs", default="demo,small", help=f"presets, of {','.join(PRESETS)}")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-busy", type=float, default=1.0,
                        help="before each run, wait until all cores are at most this busy (0..1; 1: no wait)")
    parser.add_argument("--max-wait", type=float, default=600, help="seconds to wait for --max-busy per run")
    parser.add_argument("--retries", type=int, default=0,
                        help="with --max-busy: rerun a run up to this many times while other processes used "
                             "more than that fraction of the cores during it")
    args = parser.parse_args()
    presets = args.configs.split(",")
    for preset in presets:
        if preset not in PRESETS:
            parser.error(f"unknown preset {preset} (known: {', '.join(PRESETS)})")
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    longtune = Path(args.longtune_bin)
    if longtune.is_dir():
        longtune = longtune / "longtune"
    longtune = str(longtune.resolve())
    work = args.work_dir.resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="longtune-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    try:
        tokenizer, train_dir = prepare(longtune, work)
        import sentencepiece as spm
        vocab = spm.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size()
        print(f"torch {torch.__version__}, transformers {transformers.__version__}; {args.threads} threads "
              f"({os.cpu_count()} cores: {cpu_model()}); load average {os.getloadavg()[0]:.2f}")
        print(f"fp32, batch {args.batch} x seq_len {args.seq_len}, vocab {vocab}, {args.steps} steps per run, first "
              f"{args.warmup} dropped, {args.reps} runs per implementation, alternating", flush=True)

        rows = []
        for preset in presets:
            rates = {"ours": [], "hf": []}
            others = []
            for rep in range(args.reps):
                order = ("ours", "hf") if rep % 2 == 0 else ("hf", "ours")
                for impl in order:
                    for attempt in range(1 + args.retries):
                        busy = wait_for_quiet(args.max_busy, args.max_wait) if args.max_busy < 1 else busy_fraction()
                        if impl == "ours":
                            run_dir = work / "runs" / f"{preset}-{rep}"
                            got, other = measured(
                                lambda: run_ours(longtune, preset, tokenizer, train_dir, run_dir, args))
                            check_shapes(preset, run_dir, vocab, args.seq_len)
                        else:
                            got, other = measured(lambda: run_hf(preset, vocab, args))
                        if other <= args.max_busy * os.cpu_count() or attempt == args.retries:
                            break
                        print(f"  {preset} run {rep + 1} {impl:>4}: other processes used {other:.2f} cores; "
                              f"running it again", file=sys.stderr, flush=True)
                    rates[impl] += got
                    others.append(other)
                    print(f"  {preset} run {rep + 1} {impl:>4}: median {statistics.median(got):8.0f} tok/s "
                          f"(min {min(got):.0f}, max {max(got):.0f}); busy before {busy:.0%}, "
                          f"other processes {other:.2f} cores during", file=sys.stderr, flush=True)
            ours, hf = statistics.median(rates["ours"]), statistics.median(rates["hf"])
            rows.append((preset, ours, hf, max(others)))

        print(f"{'config':>7} {'ours tok/s':>11} {'HF tok/s':>10} {'ours/HF':>8} {'others (cores, max)':>20}")
        for preset, ours, hf, other in rows:
            print(f"{preset:>7} {ours:>11.0f} {hf:>10.0f} {ours / hf:>7.2f}x {other:>20.2f}")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
