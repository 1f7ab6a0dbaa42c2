"""`longtune import-tokens` against inputs numpy and json wrote: JSONL ({"ids"} / {"input_ids"}, plain
and zstd), a flat uint16/uint32 .bin with uint64 boundaries. Every imported document holds exactly the
ids it was given (read back with the documented shard reader); a prepared split round-trips through
JSONL into byte-identical shards; bad ids, empty documents and malformed lines fail naming the line
and leave no manifest; a killed import reruns to byte-identical output; training reads the result."""
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from prepare_data_support import load_split, manifest_of, read_shard, run, run_and_kill, tree

VOCAB = 50000


def documents(seed, count, vocab=VOCAB, max_len=400):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, rng.integers(1, max_len)).tolist() for _ in range(count)]


def write_jsonl(path, docs, field="ids", compress=False):
    path.write_text("".join(json.dumps({field: d, "meta": {"n": len(d)}}) + "\n" for d in docs))
    if compress:
        subprocess.run(["zstd", "-q", "--rm", "-f", str(path), "-o", f"{path}.zst"], check=True)
        return Path(f"{path}.zst")
    return path


def import_tokens(longtune, out, *args, expect=0):
    return run([longtune, "import-tokens", "--out", out, *args], expect=expect)


def imported_docs(out, split="train"):
    return [d.tolist() for docs in load_split(out, manifest_of(out), split).values() for d in docs]


def test_jsonl_plain_and_zstd_both_fields(longtune, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a, b, c = documents(1, 50), documents(2, 30), documents(3, 20)
    write_jsonl(src / "a.jsonl", a)
    write_jsonl(src / "b.jsonl", b, field="input_ids", compress=True)
    (src / "c.jsonl").write_text("\n".join(json.dumps({"ids": d}) for d in c) + "\n\n  \n")  # blank lines
    (src / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    result = import_tokens(longtune, out, "--input", src, "--vocab-size", VOCAB, "--bos-id", 1, "--eos-id", 2)
    assert "100 documents" in result.stdout
    manifest = manifest_of(out)
    assert manifest["input_kind"] == "token_jsonl" and manifest["token_width"] == "uint16"
    assert manifest["tokenizer"] == {"path": "", "sha256": "", "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2}
    assert [s["path"] for s in manifest["splits"]["train"]["sources"]] == ["a.jsonl", "b.jsonl.zst", "c.jsonl"]
    assert imported_docs(out) == a + b + c
    # A rerun on the same inputs changes nothing.
    before = tree(out)
    assert "1 kept" in import_tokens(longtune, out, "--input", src, "--vocab-size", VOCAB, "--bos-id", 1,
                                     "--eos-id", 2).stdout
    assert tree(out) == before


@pytest.mark.parametrize("dtype,vocab,width", [("uint16", 32000, "uint16"), ("uint32", 128256, "uint32"),
                                               ("uint32", 32000, "uint16")])
def test_bin_with_offsets(longtune, tmp_path, dtype, vocab, width):
    docs = documents(4, 200, vocab=vocab)
    flat = np.concatenate([np.asarray(d) for d in docs]).astype("<u2" if dtype == "uint16" else "<u4")
    bounds = np.cumsum([0] + [len(d) for d in docs]).astype("<u8")
    flat.tofile(tmp_path / "tokens.bin")
    bounds.tofile(tmp_path / "offsets.bin")
    out = tmp_path / "out"
    import_tokens(longtune, out, "--input", tmp_path / "tokens.bin", "--offsets", tmp_path / "offsets.bin",
                  "--dtype", dtype, "--vocab-size", vocab, "--bos-id", 0, "--eos-id", 1, "--split-name", "validation")
    manifest = manifest_of(out)
    assert manifest["input_kind"] == "token_bin" and manifest["token_width"] == width
    assert imported_docs(out, "validation") == docs


def test_prepared_split_round_trips_byte_identical(longtune, tmp_path):
    """prepare-data's shard -> its documents as JSONL -> import-tokens with the same tokenizer: the
    same shard bytes, so imported and prepared data are interchangeable."""
    books = tmp_path / "books"
    books.mkdir()
    rng = random.Random(0)
    words = "the whale sea ship captain and of a long voyage night storm 1851 said".split()
    for b in range(6):
        (books / f"{b}.txt").write_text(" ".join(rng.choice(words) for _ in range(3000)) + "\n")
    prefix = tmp_path / "tok"
    run([longtune, "tokenizer", "train", "--input", books, "--vocab-size", 300, "--out", prefix])
    prepared = tmp_path / "prepared"
    run([longtune, "prepare-data", "--input", books, "--tokenizer", f"{prefix}.model", "--out", prepared, "--quiet"])
    width, docs = read_shard(prepared / "train" / "shard-00000.bin")
    assert len(docs) == 6
    write_jsonl(tmp_path / "docs.jsonl", [d.tolist() for d in docs])
    imported = tmp_path / "imported"
    import_tokens(longtune, imported, "--input", tmp_path / "docs.jsonl", "--tokenizer", f"{prefix}.model")
    assert (imported / "train" / "shard-00000.bin").read_bytes() == (prepared / "train" / "shard-00000.bin").read_bytes()
    assert manifest_of(imported)["tokenizer"] == manifest_of(prepared)["tokenizer"]
    # The tokenizer's own vocabulary bounds the ids, and flags that contradict it are refused.
    result = import_tokens(longtune, tmp_path / "x", "--input", tmp_path / "docs.jsonl", "--tokenizer",
                           f"{prefix}.model", "--vocab-size", 1000, expect=1)
    assert "--vocab-size 1000 disagrees with tokenizer" in result.stderr


BAD_LINES = {
    "id_too_large": ('{"ids": [5, 7, 50000]}', "docs.jsonl:3: id 50000 at position 2 is not below the vocabulary size 50000"),
    "empty": ('{"ids": []}', "docs.jsonl:3: empty document (no ids)"),
    "not_json": ('{"ids": [1, 2', "docs.jsonl:3: not a JSON object"),
    "no_field": ('{"text": "hello"}', "docs.jsonl:3: no \"ids\" or \"input_ids\" field"),
    "both_fields": ('{"ids": [1], "input_ids": [1]}', "docs.jsonl:3: has both \"ids\" and \"input_ids\""),
    "negative": ('{"ids": [1, -4]}', "docs.jsonl:3: \"ids\"[1] is -4, not a non-negative integer id"),
    "float": ('{"input_ids": [1.5]}', "docs.jsonl:3: \"input_ids\"[0] is 1.5, not a non-negative integer id"),
    "not_array": ('{"ids": 7}', "docs.jsonl:3: \"ids\" is not an array"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_jsonl_lines_name_the_line(longtune, tmp_path, case):
    line, message = BAD_LINES[case]
    (tmp_path / "docs.jsonl").write_text('{"ids": [1, 2, 3]}\n\n' + line + '\n{"ids": [4]}\n')
    out = tmp_path / "out"
    result = import_tokens(longtune, out, "--input", tmp_path / "docs.jsonl", "--vocab-size", VOCAB, "--bos-id", 1,
                           "--eos-id", 2, expect=1)
    assert message in result.stderr, result.stderr
    assert not (out / "manifest.json").exists()
    assert not list((out / "train").glob("*.bin")), "a shard of a failed import"


def test_bad_bin_inputs_are_named(longtune, tmp_path):
    np.asarray([5, 6, 7, 8, 9], "<u2").tofile(tmp_path / "t.bin")
    common = ["--input", tmp_path / "t.bin", "--dtype", "uint16", "--bos-id", 1, "--eos-id", 2]

    def fails(bounds, message, vocab=100):
        if bounds is not None:
            np.asarray(bounds, "<u8").tofile(tmp_path / "o.bin")
        result = import_tokens(longtune, tmp_path / "out", *common, "--vocab-size", vocab, "--offsets",
                               tmp_path / "o.bin", expect=1)
        assert message in result.stderr, result.stderr
        assert not (tmp_path / "out" / "manifest.json").exists()

    fails([0, 3, 4], "o.bin: the last boundary is 4, but the token file holds 5 ids")
    fails([1, 5], "o.bin: the first boundary is 1, not 0")
    fails([0, 4, 3, 5], "o.bin: boundary 2 (3) is below boundary 1 (4)")
    fails([0, 2, 2, 5], "t.bin: document 1 (ids 2..2): empty document")
    fails([0, 5], "t.bin: document 0 (ids 0..5): id 9 at position 4 is not below the vocabulary size 9", vocab=9)
    (tmp_path / "o.bin").write_bytes(b"\0" * 12)
    fails(None, "o.bin: 12 bytes is not two or more little-endian uint64 document boundaries")
    (tmp_path / "t.bin").write_bytes(b"\1\0\2")
    fails([0, 1], "t.bin: 3 bytes is not a whole number of uint16 ids")
    result = import_tokens(longtune, tmp_path / "out", *common, "--vocab-size", 100, expect=1)
    assert "needs --offsets" in result.stderr
    result = import_tokens(longtune, tmp_path / "out", "--input", tmp_path / "t.bin", expect=1)
    assert "give --tokenizer, or --vocab-size with --bos-id and --eos-id" in result.stderr


def test_killed_import_reruns_byte_identical(longtune, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in range(24):
        write_jsonl(src / f"part-{f:03d}.jsonl", documents(100 + f, 300, max_len=600))
    args = ["--input", src, "--vocab-size", VOCAB, "--bos-id", 1, "--eos-id", 2, "--shard-mb", "0.5"]
    clean = tmp_path / "clean"
    import_tokens(longtune, clean, *args)
    assert len(manifest_of(clean)["splits"]["train"]["shards"]) >= 6
    expected = tree(clean)
    out = tmp_path / "killed"
    kills = 0
    for delay in (0.05, 0.2, 0.4):
        kills += run_and_kill([longtune, "import-tokens", "--out", out, *args], delay=delay)
    assert kills >= 1, "the import finished before any kill; make the input larger"
    result = import_tokens(longtune, out, *args)
    assert tree(out) == expected
    assert "kept from an earlier run" in result.stdout


def test_training_reads_imported_tokens(longtune, tmp_path):
    src = tmp_path / "docs.jsonl"
    write_jsonl(src, documents(7, 40, vocab=512, max_len=300))
    out = tmp_path / "tokens"
    import_tokens(longtune, out, "--input", src, "--vocab-size", 512, "--bos-id", 1, "--eos-id", 2)
    job = tmp_path / "job.yaml"
    job.write_text(f"""model:
  source: "preset:tiny"
data:
  train: {out}/train
  seq_len: 64
train:
  steps: 2
  global_batch: 2
  micro_batch: 2
  precision: fp32
  run_dir: {tmp_path / "run"}
  cpu_threads: 1
parallel:
  sharding: no_shard
eval:
  stride: 32
""")
    run([longtune, "train", job])
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("kind") == "train"] == [1, 2]
