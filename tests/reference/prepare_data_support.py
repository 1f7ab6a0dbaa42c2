"""Shared helpers and session fixtures of the prepare-data oracle tests: the shard reader (the
on-disk format, documented), running the CLI, the embedded corpus, its tokenizer and prepared output."""
import csv
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "test")
SHARDS = ["--shard-mb", "1"]  # several shards per split on the 6 MB corpus


# ---------------------------------------------------------------------------------------------
# Shard reader: the on-disk format, little-endian.
#   64-byte header: char[8] "LTTOKENS", u32 version = 1, u32 token_bytes (2 | 4), u64 token_count,
#                   u64 doc_count, u64 tokens_offset = 64, u64 index_offset, 16 zero bytes
#   tokens_offset:  token ids of all documents back to back (uint16 or uint32)
#   index_offset:   u64[doc_count + 1] document start offsets in tokens (= 64 + token_count * token_bytes
#                   rounded up to 8); [0] = 0, [doc_count] = token_count; file ends right after it.
SHARD_HEADER = np.dtype([("magic", "S8"), ("version", "<u4"), ("token_bytes", "<u4"), ("token_count", "<u8"),
                         ("doc_count", "<u8"), ("tokens_offset", "<u8"), ("index_offset", "<u8"),
                         ("reserved", "V16")])


def read_shard(path):
    """The documents of one shard, as numpy arrays of ids, after checking every header invariant."""
    data = Path(path).read_bytes()
    assert len(data) >= 64, f"{path}: shorter than its header"
    h = np.frombuffer(data, SHARD_HEADER, count=1)[0]
    assert h["magic"] == b"LTTOKENS" and h["version"] == 1, f"{path}: magic/version"
    assert h["token_bytes"] in (2, 4) and h["tokens_offset"] == 64, f"{path}: width/tokens_offset"
    assert bytes(h["reserved"]) == bytes(16), f"{path}: reserved bytes not zero"
    count, docs = int(h["token_count"]), int(h["doc_count"])
    assert h["index_offset"] == (64 + count * int(h["token_bytes"]) + 7) // 8 * 8, f"{path}: index_offset"
    assert len(data) == h["index_offset"] + 8 * (docs + 1), f"{path}: file size"
    tokens = np.frombuffer(data, "<u2" if h["token_bytes"] == 2 else "<u4", count, 64)
    offsets = np.frombuffer(data, "<u8", docs + 1, int(h["index_offset"]))
    assert offsets[0] == 0 and offsets[-1] == count and np.all(np.diff(offsets.astype(np.int64)) >= 0), path
    return int(h["token_bytes"]), [tokens[offsets[i]:offsets[i + 1]] for i in range(docs)]


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_split(out, manifest, split):
    """{source path: [documents]} of one split, after checking the manifest against the shards."""
    entry = manifest["splits"][split]
    width = {"uint16": 2, "uint32": 4}[manifest["token_width"]]
    docs = []
    for i, shard in enumerate(entry["shards"]):
        assert shard["file"] == f"{split}/shard-{i:05d}.bin"
        path = Path(out) / shard["file"]
        assert shard["bytes"] == path.stat().st_size and shard["sha256"] == sha256_file(path), shard
        token_bytes, shard_docs = read_shard(path)
        assert token_bytes == width
        assert shard["documents"] == len(shard_docs) and shard["tokens"] == sum(map(len, shard_docs)), shard
        docs += shard_docs
    assert entry["documents"] == len(docs) and entry["tokens"] == sum(map(len, docs))
    paths = [s["path"] for s in entry["sources"]]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    assert sum(s["documents"] for s in entry["sources"]) == len(docs)
    result, k = {}, 0
    for source in entry["sources"]:
        result[source["path"]] = docs[k:k + source["documents"]]
        assert source["tokens"] == sum(map(len, result[source["path"]])), source
        k += source["documents"]
    return result


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def tree(d):
    """Every file under d (hidden ones too) -> sha256 of its bytes; every folder -> "folder"."""
    d = Path(d)
    return {str(p.relative_to(d)): sha256_file(p) if p.is_file() else "folder" for p in sorted(d.rglob("*"))}


def mtimes(d):
    d = Path(d)
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*"))}


def run(cmd, expect=0):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert result.returncode == expect, (
        f"{' '.join(map(str, cmd))} exited {result.returncode}, expected {expect}:\n{result.stderr}")
    return result


def prepare(longtune, root, tokenizer, out, *extra, expect=0):
    return run([longtune, "prepare-data", "--input", root, "--tokenizer", tokenizer, "--out", out, *extra],
               expect=expect)


def manifest_of(out):
    return json.loads((Path(out) / "manifest.json").read_text())


def skipped_of(manifest, split="train"):
    return {s["path"]: s["reason"] for s in manifest["splits"][split].get("skipped", [])}


# ---------------------------------------------------------------------------------------------
# Session fixtures: the corpus with our tokenizer, and one prepared copy of it.

@pytest.fixture(scope="session")
def corpus(tmp_path_factory, longtune):
    root = tmp_path_factory.mktemp("corpus") / "pg19"
    run(["bash", REPO / "scripts" / "make_corpus.sh", root, longtune])
    return root


@pytest.fixture(scope="session")
def tokenizer(corpus):
    return corpus / "tokenizer.model"


@pytest.fixture(scope="session")
def sp(tokenizer):
    return spm.SentencePieceProcessor(model_file=str(tokenizer))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, longtune, corpus, tokenizer):
    out = tmp_path_factory.mktemp("prepared") / "out"
    start = time.monotonic()
    result = prepare(longtune, corpus, tokenizer, out, *SHARDS)
    return {"out": out, "elapsed": time.monotonic() - start, "stderr": result.stderr}


@pytest.fixture(scope="session")
def prepared_one_thread(tmp_path_factory, longtune, corpus, tokenizer):
    out = tmp_path_factory.mktemp("prepared1") / "out"
    start = time.monotonic()
    prepare(longtune, corpus, tokenizer, out, "--threads", "1", *SHARDS)
    return {"out": out, "elapsed": time.monotonic() - start}


# ---------------------------------------------------------------------------------------------
# (a) the corpus

def run_and_kill(cmd, delay=None, when=None):
    """Starts cmd; SIGKILLs it after `delay` s or once when() is true. False if it finished first."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while proc.poll() is None:
        if (delay is not None and time.monotonic() - start >= delay) or (when is not None and when()):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return proc.returncode == -signal.SIGKILL
        time.sleep(0.002)
    return False

