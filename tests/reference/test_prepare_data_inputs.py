"""prepare-data input handling against Python SentencePiece: bad books skipped with warnings, errors
and usage errors, JSONL and .jsonl.zst inputs, a folder of .txt and a single file (see
test_prepare_data.py for the oracle itself)."""
from prepare_data_support import *  # noqa: F401,F403 (helpers and session fixtures)


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
