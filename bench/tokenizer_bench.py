"""Byte-level BPE (tokenizer.json) throughput: `longtune prepare-data` against HF tokenizers'
`encode_batch` with the same number of threads, on the same files.

Usage (from the repository root, after scripts/build.sh):
    eval "$(scripts/setup.sh)"
    $LONGTUNE_PYTHON bench/tokenizer_bench.py --longtune-bin build/bin --work-dir /tmp/ltbench

It builds the embedded corpus (scripts/make_corpus.sh) in WORK_DIR, the test suite's HF-trained
tokenizers of GPT-2's, Llama 3's and SmolLM2's pre-tokenizer chains (tests/reference/bpe_tokenizers.py,
vocabulary 3000) plus the real SmolLM2-135M tokenizer when LONGTUNE_SMOLLM2 names it, and a PG-19
root of at least --target-mb MB (the corpus books replicated). Then, for each tokenizer and thread
count (--threads, default 1 and 2), interleaved --runs times (default 3), median reported:
  ours  `longtune prepare-data --threads N` into a fresh folder: the whole process (start-up,
        tokenizer load, reading and cleaning the books, encoding, writing shards and manifest)
  hf    a fresh Python process with RAYON_NUM_THREADS=N: Tokenizer.from_file, reading every book
        as prepare-data reads it (open(..., errors="replace").read()), then
        encode_batch(texts, add_special_tokens=False) (no writing; Python start-up excluded)
MB/s counts source bytes. Both must give the same number of tokens, or the script fails (the ids
themselves are compared in tests/reference/test_bpe_tokenizer.py).
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reference"))
sys.path.insert(0, str(REPO / "bench"))
import bpe_tokenizers  # noqa: E402
from prepare_data_bench import SPLITS, bench_arguments, build_root, time_ours  # noqa: E402

HF_WORKER = r"""
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1])
texts = []
for split in sys.argv[3].split(","):
    for path in sorted((Path(sys.argv[2]) / split).glob("*.txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens}))
"""


def time_hf(python, tokenizer_json, root, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    result = subprocess.run([python, "-c", HF_WORKER, str(tokenizer_json), str(root), ",".join(SPLITS)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"HF tokenizers worker failed:\n{result.stderr}")
    report = json.loads(result.stdout)
    return report["seconds"], report["tokens"]


def main():
    args, longtune, work = bench_arguments(__doc__, target_mb=24)

    corpus = work / "corpus"
    subprocess.run(["bash", str(REPO / "scripts" / "make_corpus.sh"), str(corpus), longtune], check=True)
    tokenizers = {kind: bpe_tokenizers.build(kind, corpus, work / "bpe" / kind) for kind in args.kinds.split(",")}
    if os.environ.get("LONGTUNE_SMOLLM2"):
        tokenizers["smollm2-135m"] = Path(os.environ["LONGTUNE_SMOLLM2"])
    root = work / "root"
    total = build_root(corpus, root, int(args.target_mb * 1e6))
    print(f"input: {len(list(root.glob('*/*.txt')))} books, {total / 1e6:.1f} MB; median of {args.runs}", flush=True)

    print(f"{'tokenizer':>13} {'threads':>7} {'ours MB/s':>10} {'hf MB/s':>8} {'ours/hf':>8} {'Mtokens':>8}")
    for name, directory in tokenizers.items():
        for threads in [int(t) for t in args.threads.split(",")]:
            ours, hf = [], []
            for run in range(args.runs):  # interleaved, so that drifting machine load hits both alike
                ours.append(time_ours(longtune, root, directory, work / "out", threads))
                hf.append(time_hf(sys.executable, directory / "tokenizer.json", root, threads))
                print(f"  {name} threads {threads} run {run + 1}: ours {ours[-1][0]:.2f} s, hf {hf[-1][0]:.2f} s",
                      file=sys.stderr, flush=True)
            counts = {t for _, t in ours + hf}
            if len(counts) != 1:
                sys.exit(f"{name}: token counts differ between runs or implementations: {sorted(counts)}")
            t_ours = statistics.median(e for e, _ in ours)
            t_hf = statistics.median(e for e, _ in hf)
            print(f"{name:>13} {threads:>7} {total / 1e6 / t_ours:>10.2f} {total / 1e6 / t_hf:>8.2f} "
                  f"{t_hf / t_ours:>7.2f}x {counts.pop() / 1e6:>8.2f}", flush=True)
    shutil.rmtree(work / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
