"""`longtune tokenizer train` and `longtune prepare-data` against Python SentencePiece (the oracle).

The embedded corpus (scripts/make_corpus.sh) is built once per session and its tokenizer trained with
our CLI. Every document we write must hold exactly the ids that Python's
`SentencePieceProcessor(model_file=...).encode(text)` gives, with text read as
`open(path, encoding="utf-8", errors="replace").read()`. Beside that: bad inputs, kill -9 and rerun,
rerun skipping, tokenizer mismatch, JSONL and .jsonl.zst inputs, metadata titles.
"""
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

def test_corpus_layout_and_determinism(corpus, tmp_path):
    names = sorted(p.name for p in corpus.iterdir() if not p.name.startswith("."))
    assert names == ["metadata.csv", "test", "tokenizer.model", "tokenizer.vocab", "train", "validation"]
    with open(corpus / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert all(len(row) == 4 for row in rows)
    ids = [row[0] for row in rows]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == len(ids)
    files = {split: sorted(p.stem for p in (corpus / split).iterdir()) for split in SPLITS}
    assert sorted(sum(files.values(), [])) == sorted(ids)
    assert any("," in row[1] for row in rows)
    assert len(files["test"]) >= 2 and len(files["validation"]) >= 2 and len(files["train"]) >= 50
    assert sum((corpus / "test" / f"{i}.txt").stat().st_size >= 100_000 for i in files["test"]) >= 2
    for path in sorted(corpus.glob("*/*.txt")):
        data = path.read_bytes()
        data.decode("utf-8")  # strict
        assert b"\r" not in data and b"\0" not in data and data.endswith(b"\n") and data.strip(), path

    # Byte-identical on a second build; a third call on a complete corpus rebuilds nothing.
    again = tmp_path / "again"
    run(["bash", REPO / "scripts" / "make_corpus.sh", again])
    ours = {k: v for k, v in tree(corpus).items() if not k.startswith("tokenizer.")}
    assert ours[".corpus-stamp"]
    assert tree(again) == ours
    before = mtimes(again)
    run(["bash", REPO / "scripts" / "make_corpus.sh", again])
    assert mtimes(again) == before
    assert not list(tmp_path.glob("again.*")), "temporary build folders left behind"


# ---------------------------------------------------------------------------------------------
# (b) the tokenizer and the token ids

def proto_fields(data):
    """Minimal protobuf wire-format reader: {field number: [values]} (varints as int, bytes as bytes)."""
    fields, i = {}, 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            n = varint()
            value, i = data[i:i + n], i + n
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def test_tokenizer_is_llama_style_bpe(tokenizer, sp):
    # sentencepiece_model.proto: ModelProto{pieces=1, trainer_spec=2, normalizer_spec=3};
    # TrainerSpec{model_type=3 (BPE=2), vocab_size=4, split_digits=25, byte_fallback=35,
    #             unk_id=40, bos_id=41, eos_id=42}; NormalizerSpec{name=1}.
    model = proto_fields(tokenizer.read_bytes())
    trainer = proto_fields(model[2][0])
    normalizer = proto_fields(model[3][0])
    get = lambda fields, n, default: fields.get(n, [default])[-1]
    assert get(trainer, 3, 1) == 2, "model_type must be BPE"
    assert get(trainer, 4, 8000) == 4096
    assert get(trainer, 35, 0) == 1, "byte_fallback"
    assert get(trainer, 25, 0) == 1, "split_digits"
    assert (get(trainer, 40, 0), get(trainer, 41, 1), get(trainer, 42, 2)) == (0, 1, 2)
    assert get(normalizer, 1, b"") == b"identity"
    assert sp.vocab_size() == 4096 and (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert all(sp.piece_to_id(f"<0x{b:02X}>") != sp.unk_id() for b in range(256))
    assert len(sp.encode("1234567")) >= 7  # one piece per digit
    assert sp.encode("\u2603 snowman") and sp.unk_id() not in sp.encode("\u2603 snowman")  # byte fallback


def test_tokens_equal_python_sentencepiece_on_every_book(corpus, tokenizer, sp, prepared):
    out = prepared["out"]
    manifest = manifest_of(out)
    assert manifest["format"] == "longtune.prepared-tokens" and manifest["version"] == 1
    tok = manifest["tokenizer"]
    assert tok["sha256"] == sha256_file(tokenizer)
    assert (tok["vocab_size"], tok["bos_id"], tok["eos_id"]) == (4096, 1, 2)
    assert Path(tok["path"]).name == "tokenizer.model"
    assert manifest["token_width"] == "uint16"
    assert sorted(manifest["splits"]) == sorted(SPLITS)
    assert len(manifest["splits"]["train"]["shards"]) > 1

    books = {str(p.relative_to(corpus)): p for p in corpus.glob("*/*.txt")}
    paths = sorted(books)
    expected = sp.encode([read_text(books[p]) for p in paths], num_threads=os.cpu_count())
    expected = dict(zip(paths, expected))
    seen = 0
    for split in SPLITS:
        entry = manifest["splits"][split]
        assert not entry.get("skipped")
        assert [s["path"] for s in entry["sources"]] == sorted(p for p in paths if p.startswith(split + "/"))
        for source in entry["sources"]:
            st = books[source["path"]].stat()
            assert (source["bytes"], source["mtime_ns"], source["documents"]) == (st.st_size, st.st_mtime_ns, 1)
        for path, docs in load_split(out, manifest, split).items():
            assert len(docs) == 1
            ours, theirs = docs[0], expected[path]
            assert np.array_equal(ours, theirs), (
                f"{path}: ours {len(ours)} tokens, python {len(theirs)}; first difference at token "
                f"{next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))}")
            seen += 1
    assert seen == len(paths)
    assert sorted(tree(out)) == sorted(["manifest.json", *manifest["splits"]] +
                                       [s["file"] for e in manifest["splits"].values() for s in e["shards"]])


# (i) titles from metadata.csv, commas and quotes included
def test_sources_carry_metadata_titles(corpus, prepared):
    with open(corpus / "metadata.csv", newline="", encoding="utf-8") as f:
        titles = {row[0]: row[1] for row in csv.reader(f)}
    manifest = manifest_of(prepared["out"])
    for split in SPLITS:
        for source in manifest["splits"][split]["sources"]:
            assert source["title"] == titles[Path(source["path"]).stem], source
    test_titles = [s["title"] for s in manifest["splits"]["test"]["sources"]]
    assert "The Devil's Dictionary, D to F" in test_titles


# ---------------------------------------------------------------------------------------------
# (c) bad inputs: each skipped with a warning naming it, the good books still prepared

def write_bad_root(root, corpus):
    train = root / "train"
    train.mkdir(parents=True)
    big = (corpus / "test" / "10023.txt").read_bytes()  # Isaiah, ~200 KB
    # Good, but needing care: CRLF / lone CR throughout (also across read-buffer boundaries),
    # invalid UTF-8 of every kind Python replaces, a byte-order mark, a CR as the very last byte.
    (train / "1.txt").write_bytes(big.replace(b"\n", b"\r\n"))
    rng = np.random.default_rng(7)
    corrupt = bytearray(big.replace(b"\n", b"\r"))
    for pos in list(rng.integers(0, len(corrupt), 200)) + [4095, 4096, 65535, 65536, len(corrupt) - 1]:
        corrupt[pos] = 0x80 + pos % 0x7F  # continuation bytes and lead bytes out of place
    (train / "2.txt").write_bytes(bytes(corrupt))
    (train / "3.txt").write_bytes(b"\xef\xbb\xbfBOM first.\r\ncaf\xc3 \xff\xfe overlong \xc0\xaf surrogate \xed\xa0\x80"
                                  b" truncated \xe2\x82 \xf0\x9f\x98 ok \xf0\x9f\x98\x80 \xf4\x90\x80\x80 end\r")
    (train / "4.txt").write_bytes((corpus / "train" / "20001.txt").read_bytes())
    # Bad ones.
    (train / "empty.txt").write_bytes(b"")
    (train / "blank.txt").write_bytes(b" \n\t\r\n   \n")
    (train / "nul.txt").write_bytes(b"some text\n\0\0\0binary\n")
    (train / "long.txt").write_bytes(b"short line\nanother\n" + b"x" * 5000 + b"\nend\n")
    (train / "x.txt").symlink_to(root / "nowhere.txt")
    (train / "y.txt").mkdir()
    (root / "metadata.csv").write_text('1,"Isaiah, with CRLF",1611,file:///a\n'
                                       '3,"Quotes ""inside"", and, commas",2024,file:///b\n', encoding="utf-8")


BAD = {"train/empty.txt": ("empty",), "train/blank.txt": ("empty", "whitespace"),
       "train/nul.txt": ("nul", "binary"), "train/long.txt": ("line",), "train/x.txt": (), "train/y.txt": ()}


def check_good_books(root, out, sp, expected_paths):
    manifest = manifest_of(out)
    docs = load_split(out, manifest, "train")
    assert sorted(docs) == sorted(expected_paths)
    for path, d in docs.items():
        theirs = sp.encode(read_text(root / path))
        assert len(d) == 1 and np.array_equal(d[0], theirs), path
    return manifest


def test_bad_inputs_are_skipped_with_warnings(tmp_path, longtune, corpus, tokenizer, sp):
    root = tmp_path / "root"
    write_bad_root(root, corpus)
    out = tmp_path / "out"
    result = prepare(longtune, root, tokenizer, out, "--max-line-bytes", "1000", "--threads", "2")
    good = ["train/1.txt", "train/2.txt", "train/3.txt", "train/4.txt"]
    manifest = check_good_books(root, out, sp, good)
    skipped = skipped_of(manifest)
    assert sorted(skipped) == sorted(BAD)
    for path, words in BAD.items():
        assert Path(path).name in result.stderr, f"no warning naming {path}:\n{result.stderr}"
        if words:
            assert any(w in skipped[path].lower() for w in words), (path, skipped[path])
    long_warning = [line for line in result.stderr.splitlines() if "long.txt" in line]
    assert any("line 3" in line.lower() or "long.txt:3" in line for line in long_warning), long_warning
    # Default splits that are absent: a warning each, not an error.
    assert "validation" in result.stderr and "test" in result.stderr
    assert sorted(manifest["splits"]) == ["train"]
    titles = {s["path"]: s.get("title") for s in manifest["splits"]["train"]["sources"]}
    assert titles["train/1.txt"] == "Isaiah, with CRLF"
    assert titles["train/3.txt"] == 'Quotes "inside", and, commas'

    # Unreadable sources are retried on a rerun: once fixed, they are prepared, and the result is
    # the same as a clean run on the fixed input.
    (root / "train" / "x.txt").unlink()
    (root / "train" / "x.txt").write_text("The link now points somewhere.\n")
    (root / "train" / "y.txt").rmdir()
    (root / "train" / "y.txt").write_text("No longer a folder.\n")
    prepare(longtune, root, tokenizer, out, "--max-line-bytes", "1000")
    manifest = check_good_books(root, out, sp, good + ["train/x.txt", "train/y.txt"])
    assert sorted(skipped_of(manifest)) == ["train/blank.txt", "train/empty.txt", "train/long.txt", "train/nul.txt"]
    clean = tmp_path / "clean"
    prepare(longtune, root, tokenizer, clean, "--max-line-bytes", "1000")
    assert tree(out) == tree(clean)


def test_errors_exit_1_naming_the_problem(tmp_path, longtune, corpus, tokenizer):
    out = tmp_path / "out"
    # A split asked for by name but absent.
    r = prepare(longtune, corpus, tokenizer, out, "--splits", "test,nosuchsplit", expect=1)
    assert "nosuchsplit" in r.stderr
    # Missing input, missing tokenizer.
    r = prepare(longtune, tmp_path / "no-such-root", tokenizer, out, expect=1)
    assert "no-such-root" in r.stderr
    r = prepare(longtune, corpus, tmp_path / "no-such.model", out, expect=1)
    assert "no-such.model" in r.stderr
    assert not (out / "manifest.json").exists()


def test_usage_errors_exit_2(tmp_path, longtune, corpus, tokenizer):
    out = tmp_path / "out"
    run([longtune, "prepare-data"], expect=2)
    run([longtune, "prepare-data", "--input", corpus, "--tokenizer", tokenizer, "--out", out, "--no-such-flag"],
        expect=2)
    run([longtune, "tokenizer", "train", "--vocab-size", "100"], expect=2)


# ---------------------------------------------------------------------------------------------
# (d) kill -9 at any moment, then rerun: byte-identical to an uninterrupted run, no temp files

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


def test_thread_count_does_not_change_output(prepared, prepared_one_thread):
    assert tree(prepared["out"]) == tree(prepared_one_thread["out"])


# Each case kills runs one after another into the same output (a rerun resumes, so later kills land
# further along), then runs to the end. Numbers are fractions of an uninterrupted run's time.
@pytest.mark.parametrize("kills", [["first-file", 0.5], [0.15, 0.3, 0.3, "manifest"], [0.85]])
def test_kill_and_rerun_is_byte_identical(kills, tmp_path, longtune, corpus, tokenizer, prepared_one_thread):
    clean = tree(prepared_one_thread["out"])
    duration = prepared_one_thread["elapsed"]
    out = tmp_path / "out"
    cmd = [longtune, "prepare-data", "--input", corpus, "--tokenizer", tokenizer, "--out", out, "--threads", "1",
           *SHARDS]
    killed = 0
    for kill in kills:
        if kill == "first-file":
            killed += run_and_kill(cmd, when=lambda: out.exists() and any(p.is_file() for p in out.rglob("*")))
        elif kill == "manifest":
            killed += run_and_kill(cmd, when=lambda: (out / "manifest.json").exists())
        else:
            killed += run_and_kill(cmd, delay=kill * duration)
    print(f"kills {kills}: {killed} landed; left behind: {sorted(tree(out)) if out.exists() else []}")
    prepare(longtune, corpus, tokenizer, out, "--threads", "1", *SHARDS)
    assert tree(out) == clean


# ---------------------------------------------------------------------------------------------
# (e) a rerun on unchanged input skips everything and touches nothing

def test_rerun_on_unchanged_input_is_fast_and_touches_nothing(longtune, corpus, tokenizer, prepared):
    out = prepared["out"]
    before_tree, before_mtimes = tree(out), mtimes(out)
    start = time.monotonic()
    prepare(longtune, corpus, tokenizer, out, *SHARDS)
    elapsed = time.monotonic() - start
    print(f"first run {prepared['elapsed']:.2f} s, rerun {elapsed:.2f} s")
    assert elapsed < 0.25 * prepared["elapsed"] + 0.5
    assert tree(out) == before_tree
    changed = sorted(k for k, v in mtimes(out).items() if before_mtimes.get(k) != v)
    assert not changed, f"rerun on unchanged input rewrote {changed}"


def test_rerun_after_changes_equals_clean_run(tmp_path, longtune, corpus, tokenizer):
    root = tmp_path / "root"
    for split in ("validation", "test"):
        shutil.copytree(corpus / split, root / split)
    shutil.copy(corpus / "metadata.csv", root / "metadata.csv")
    out = tmp_path / "out"
    prepare(longtune, root, tokenizer, out)
    book = root / "test" / "10032.txt"
    book.write_text(book.read_text() + "And a new last line.\n")
    (root / "validation" / "99999.txt").write_text("A new book.\n")
    (root / "validation" / "20004.txt").unlink()
    prepare(longtune, root, tokenizer, out)
    clean = tmp_path / "clean"
    prepare(longtune, root, tokenizer, clean)
    assert tree(out) == tree(clean)


# ---------------------------------------------------------------------------------------------
# (f) a different tokenizer into the same output: refused, output untouched
# (also: tokenizer train takes files and folders together)

def test_tokenizer_mismatch_is_refused(tmp_path, longtune, corpus, tokenizer):
    other = tmp_path / "other"
    run([longtune, "tokenizer", "train", "--input", corpus / "test" / "10023.txt", corpus / "validation",
         "--vocab-size", "1000", "--out", other, "--threads", "2"])
    assert spm.SentencePieceProcessor(model_file=str(other) + ".model").vocab_size() == 1000
    assert Path(str(other) + ".vocab").exists()
    out = tmp_path / "out"
    prepare(longtune, corpus, tokenizer, out, "--splits", "validation,test")
    before_tree, before_mtimes = tree(out), mtimes(out)
    r = prepare(longtune, corpus, str(other) + ".model", out, "--splits", "validation,test", expect=1)
    assert sha256_file(tokenizer) in r.stderr and sha256_file(str(other) + ".model") in r.stderr, r.stderr
    assert tree(out) == before_tree and mtimes(out) == before_mtimes


# ---------------------------------------------------------------------------------------------
# (g) uint32 ids: our tokenizer with 62000 unused pieces and a user-defined one appended (> 65535)

def proto_field(number, payload):
    """One length-delimited protobuf field (payload bytes) or varint field (payload int)."""
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_uint32_tokens_for_large_vocabularies(tmp_path, longtune, corpus, tokenizer):
    # ModelProto.pieces (1) are appended after the existing ones: SentencePiece{piece=1, type=3};
    # type UNUSED = 5, USER_DEFINED = 4. Appending repeated fields is valid protobuf.
    extra = b"".join(proto_field(1, proto_field(1, f"<unused{i}>".encode()) + proto_field(3, 5))
                     for i in range(62000))
    extra += proto_field(1, proto_field(1, b"LORD") + proto_field(3, 4))
    big = tmp_path / "big.model"
    big.write_bytes(tokenizer.read_bytes() + extra)
    sp = spm.SentencePieceProcessor(model_file=str(big))
    assert sp.vocab_size() == 4096 + 62001
    root = tmp_path / "root"
    (root).mkdir()
    shutil.copy(corpus / "test" / "10008.txt", root / "ruth.txt")  # Ruth: "the LORD" throughout
    out = tmp_path / "out"
    prepare(longtune, root, big, out)
    manifest = manifest_of(out)
    assert manifest["token_width"] == "uint32" and manifest["tokenizer"]["vocab_size"] == 4096 + 62001
    docs = load_split(out, manifest, "train")
    theirs = sp.encode(read_text(root / "ruth.txt"))
    assert max(theirs) == 4096 + 62000
    (path, d), = docs.items()
    assert path.endswith("ruth.txt") and len(d) == 1 and np.array_equal(d[0], theirs)


# ---------------------------------------------------------------------------------------------
# (h) JSONL and .jsonl.zst inputs, single .txt files and folders of .txt, --split-name

RECORDS = [
    {"text": "Plain ASCII.\nSecond line, with digits 0123456789."},
    {"text": "Unicode raw: caf\u00e9 na\u00efve \u4e2d\u6587 \U0001F600 \u2603", "meta": {"id": 7, "tags": ["a", "b"]}},
    {"id": 3, "text": "Escapes: \"quoted\" back\\slash tab\there \u00e9\n\n  indented\n"},
    {"text": "  leading and trailing spaces  "},
    {"text": "The LORD is my shepherd; I shall not want. " * 400},
]


def write_jsonl(path):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, record in enumerate(RECORDS):
            f.write(json.dumps(record, ensure_ascii=(i % 2 == 0)) + "\n")  # \uXXXX escapes and raw UTF-8


def zstd_compress(src, dst):
    """The zstd CLI if installed, else libzstd (which the build links) through ctypes."""
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-19", str(src), "-o", str(dst)], check=True)
        return
    lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    data = Path(src).read_bytes()
    buffer = ctypes.create_string_buffer(lib.ZSTD_compressBound(ctypes.c_size_t(len(data))))
    n = lib.ZSTD_compress(buffer, ctypes.c_size_t(len(buffer)), data, ctypes.c_size_t(len(data)), 19)
    assert not lib.ZSTD_isError(n)
    Path(dst).write_bytes(buffer.raw[:n])


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.zst"])
def test_jsonl_inputs(kind, tmp_path, longtune, tokenizer, sp):
    path = tmp_path / "docs.jsonl"
    write_jsonl(path)
    if kind == "jsonl.zst":
        zstd_compress(path, Path(str(path) + ".zst"))
        path = Path(str(path) + ".zst")
    out = tmp_path / "out"
    prepare(longtune, path, tokenizer, out, "--split-name", "validation")
    manifest = manifest_of(out)
    assert sorted(manifest["splits"]) == ["validation"]
    (source,) = manifest["splits"]["validation"]["sources"]
    assert source["path"].endswith(path.name) and source["documents"] == len(RECORDS)
    assert source["bytes"] == path.stat().st_size
    (docs,) = load_split(out, manifest, "validation").values()
    for record, d in zip(RECORDS, docs, strict=True):
        assert np.array_equal(d, sp.encode(record["text"])), record["text"][:40]


def test_bad_jsonl_records_are_skipped_with_warnings(tmp_path, longtune, tokenizer, sp):
    # Like a bad book, a bad record is skipped with a warning naming file:line, and listed in `skipped`.
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text key"}\nnot json\n{"text": 5}\n{"text": "also fine"}\n',
                    encoding="utf-8")
    out = tmp_path / "out"
    r = prepare(longtune, path, tokenizer, out)
    assert "bad.jsonl:2" in r.stderr and '"text"' in r.stderr, r.stderr
    manifest = manifest_of(out)
    skipped = skipped_of(manifest)
    assert sorted(skipped) == ["bad.jsonl:2", "bad.jsonl:3", "bad.jsonl:4"]
    assert "text" in skipped["bad.jsonl:2"] and "json" in skipped["bad.jsonl:3"].lower()
    (docs,) = load_split(out, manifest, "train").values()
    assert [d.tolist() for d in docs] == sp.encode(["fine", "also fine"])


def test_txt_folder_and_single_file_inputs(tmp_path, longtune, corpus, tokenizer, sp):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("10008.txt", "10032.txt"):
        shutil.copy(corpus / "test" / name, folder / name)
    out = tmp_path / "out"
    prepare(longtune, folder, tokenizer, out)
    manifest = manifest_of(out)
    docs = load_split(out, manifest, "train")
    assert sorted(docs) == ["10008.txt", "10032.txt"]
    for name, d in docs.items():
        assert np.array_equal(d[0], sp.encode(read_text(folder / name)))
    single = tmp_path / "single"
    prepare(longtune, folder / "10032.txt", tokenizer, single, "--split-name", "test")
    manifest = manifest_of(single)
    (path, d), = load_split(single, manifest, "test").items()
    assert path.endswith("10032.txt") and np.array_equal(d[0], sp.encode(read_text(folder / "10032.txt")))
