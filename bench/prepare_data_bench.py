"""Throughput of `longtune prepare-data` against Python SentencePiece on the same files.

Usage (from the repository root, after scripts/build.sh):
    eval "$(scripts/setup.sh)"
    $LONGTUNE_PYTHON bench/prepare_data_bench.py --longtune-bin build/bin --work-dir /tmp/ltbench

It builds the embedded corpus (scripts/make_corpus.sh, tokenizer trained with our CLI) in WORK_DIR,
replicates its books under new ids into a PG-19 root of at least --target-mb MB, then times, side by
side, for each thread count (--threads, default 1 and 2):
  ours    `longtune prepare-data --threads N` into a fresh output folder (whole process: start-up,
          tokenizer load, reading, cleaning, encoding, writing shards and manifest)
  python  SentencePieceProcessor(model_file=...) load, reading every file with
          open(path, encoding="utf-8", errors="replace").read(), then sp.encode(texts, num_threads=N)
          (no writing)
Each is run --runs times (default 3); the table gives the median. MB/s counts source bytes.
Both sides must produce the same number of tokens, or the script fails.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")


def build_root(corpus, root, target_bytes):
    """PG-19 root holding every corpus book `copies` times (ids <book_id><copy:02>), >= target_bytes.
    Kept between runs; its stamp is written last, so a half-built root is rebuilt."""
    books = sorted(corpus.glob("*/*.txt"))
    size = sum(p.stat().st_size for p in books)
    copies = -(-target_bytes // size)
    stamp = root / ".bench-stamp"
    if stamp.exists() and stamp.read_text() == f"{copies} {size}\n":
        return sum(p.stat().st_size for p in root.glob("*/*.txt"))
    shutil.rmtree(root, ignore_errors=True)
    for split in SPLITS:
        (root / split).mkdir(parents=True)
    rows = []
    for book in books:
        for copy in range(copies):
            book_id = f"{book.stem}{copy:02d}"
            shutil.copyfile(book, root / book.parent.name / f"{book_id}.txt")
            rows.append(f"{book_id},Copy {copy} of {book.stem},2024,file://{book}\n")
    (root / "metadata.csv").write_text("".join(rows))
    stamp.write_text(f"{copies} {size}\n")
    return sum(p.stat().st_size for p in root.glob("*/*.txt"))


def time_ours(longtune, root, tokenizer, out, threads):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run([longtune, "prepare-data", "--input", str(root), "--tokenizer", str(tokenizer),
                             "--out", str(out), "--threads", str(threads)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"prepare-data failed:\n{result.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    return elapsed, sum(s["tokens"] for s in manifest["splits"].values())


def time_python(root, tokenizer, threads):
    paths = sorted(p for split in SPLITS for p in (root / split).glob("*.txt"))
    start = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    texts = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    ids = sp.encode(texts, num_threads=threads)
    elapsed = time.perf_counter() - start
    return elapsed, sum(map(len, ids))


def bench_arguments(doc, target_mb):
    """The command line both prepare-data benchmarks take: (args, longtune binary, work folder)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--longtune-bin", required=True, help="build/bin folder, or the longtune binary")
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--target-mb", type=float, default=target_mb)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--kinds", default="gpt2,llama3,smollm", help="tokenizer_bench: test tokenizers to time")
    args = parser.parse_args()
    longtune = Path(args.longtune_bin)
    if longtune.is_dir():
        longtune = longtune / "longtune"
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    return args, str(longtune.resolve()), work


def main():
    args, longtune, work = bench_arguments(__doc__, target_mb=50)

    corpus = work / "corpus"
    subprocess.run(["bash", str(REPO / "scripts" / "make_corpus.sh"), str(corpus), longtune], check=True)
    tokenizer = corpus / "tokenizer.model"
    root = work / "root"
    total = build_root(corpus, root, int(args.target_mb * 1e6))
    files = len(list(root.glob("*/*.txt")))
    print(f"input: {files} books, {total / 1e6:.1f} MB; tokenizer {tokenizer} "
          f"({spm.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size()} pieces); median of {args.runs}",
          flush=True)

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        ours, python = [], []
        for run in range(args.runs):  # interleaved, so that drifting machine load hits both alike
            ours.append(time_ours(longtune, root, tokenizer, work / "out", threads))
            python.append(time_python(root, tokenizer, threads))
            print(f"  threads {threads} run {run + 1}: ours {ours[-1][0]:.2f} s, python {python[-1][0]:.2f} s",
                  file=sys.stderr, flush=True)
        tokens = {t for _, t in ours + python}
        if len(tokens) != 1:
            sys.exit(f"token counts differ between runs or implementations: {sorted(tokens)}")
        t_ours = statistics.median(e for e, _ in ours)
        t_python = statistics.median(e for e, _ in python)
        count = tokens.pop()
        rows.append((threads, "ours", t_ours, count, t_python / t_ours))  # throughput ratio
        rows.append((threads, "python", t_python, count, None))

    print(f"{'threads':>7} {'impl':>7} {'median s':>9} {'MB/s':>8} {'Mtok/s':>8} {'ours/python':>12}")
    for threads, impl, seconds, tokens, ratio in rows:
        print(f"{threads:>7} {impl:>7} {seconds:>9.2f} {total / 1e6 / seconds:>8.2f} {tokens / 1e6 / seconds:>8.2f} "
              f"{'' if ratio is None else f'{ratio:.2f}x':>12}")


if __name__ == "__main__":
    main()
