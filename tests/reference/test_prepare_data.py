"""`longtune tokenizer train` and `longtune prepare-data` against Python SentencePiece (the oracle).

The embedded corpus (scripts/make_corpus.sh) is built once per session and its tokenizer trained with
our CLI. Every document we write must hold exactly the ids that Python's
`SentencePieceProcessor(model_file=...).encode(text)` gives, with text read as
`open(path, encoding="utf-8", errors="replace").read()`. Beside that: bad inputs, kill -9 and rerun,
rerun skipping, tokenizer mismatch, metadata titles (input handling: test_prepare_data_inputs.py).
"""
from prepare_data_support import *  # noqa: F401,F403 (helpers and session fixtures)


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

def test_rerun_on_unchanged_input_skips_everything_and_touches_nothing(longtune, corpus, tokenizer, prepared):
    # What the rerun did, not how long it took: no book tokenized, every shard kept.
    out = prepared["out"]
    before_tree, before_mtimes = tree(out), mtimes(out)
    result = prepare(longtune, corpus, tokenizer, out, *SHARDS)
    assert "tokenized 0 B (0 tokens) this run" in result.stdout, result.stdout
    for line in result.stdout.splitlines()[2:5]:  # split rows: shards == reused
        fields = line.split()
        assert fields[0] in SPLITS and fields[-1] == fields[-2], line
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
