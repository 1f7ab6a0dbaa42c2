"""Our byte-level BPE (tokenizer.json) against HF tokenizers: the ids of `longtune tokenizer encode`
equal Tokenizer.encode(text, add_special_tokens=False).ids on every book of the embedded corpus and
on adversarial text, for a GPT-2-style, a Llama-3-style, a SmolLM2-style and a prefix-space
tokenizer (tests/reference/bpe_tokenizers.py), and for the real SmolLM2-135M tokenizer when the
setup made it (LONGTUNE_SMOLLM2). BOS/EOS come from tokenizer_config.json; prepare-data with a
tokenizer.json writes the same ids; bad tokenizer.json files fail with the file and field named."""
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from tokenizers import Tokenizer

import bpe_tokenizers
from prepare_data_support import corpus, load_split, manifest_of, prepare, read_text  # noqa: F401

ADVERSARIAL = {
    "contractions": "I'm you're he'S THEY'LL We'VE she'd it's DON'T o'clock 'twas rock'n'roll Ma'am's I'M",
    "digits": "1 12 123 1234 12345678901234567890 3.14159 1,000,000 -42 0x1F ٣٤٥ ¹²³ ½ Ⅻ 2nd",
    "whitespace": "a  b   c\t\td \t \n\n\n  e\r\nf\r\n\r\ng\rh   \n  \t\n\x0b\x0cend   ",
    "unicode_spaces": "a\u00a0b \u00a0 c\u202fd\u2009e\u3000f\x85g\u2028h\u200bi\u180ej\u1680k",
    "cjk": "中文分词测试，日本語のテキスト、한국어 텍스트。　全角スペース",
    "arabic_hebrew": "مرحبا بالعالم ١٢٣ שָׁלוֹם עולם ‏rtl‎",
    "combining": "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353alg\u0300o a\u0323\u0304 \u0301alone",
    "emoji": "👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 ❤️ 🇺🇸🇯🇵 x🙂y 🤷🏾‍♀️",
    "special_tokens": "<|endoftext|> a<|endoftext|>b <|begin_of_text|>x<|end_of_text|> <|im_start|>user\n"
                      "<mask> q  <mask>r <sep>   y a[word]b [word] c Jerusalem! the Lord x the Lordship <|endof",
    "code": "def f(x):\n    return x**2  # comment\n\tif a!=b: pass\nhttps://example.com/a?b=c&d=e#f",
    "long_runs": " " * 3000 + "a" * 2000 + "\n" * 500 + "!" * 700 + "1" * 300,
    "empty": "",
}


def random_bytes_text(seed=0, n=4000):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


def run(cmd):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stderr}"
    return result.stdout


def our_ids(longtune, tokenizer, path, raw=False):
    out = run([longtune, "tokenizer", "encode", "--tokenizer", tokenizer, "--input", path] + (["--raw"] if raw else []))
    return [int(t) for t in out.split()]


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):  # noqa: F811
    root = tmp_path_factory.mktemp("bpe")
    return {kind: bpe_tokenizers.build(kind, corpus, root / kind) for kind in bpe_tokenizers.KINDS}


def tokenizer_dirs(built):
    dirs = dict(built)
    if os.environ.get("LONGTUNE_SMOLLM2"):
        dirs["smollm2-135m"] = Path(os.environ["LONGTUNE_SMOLLM2"])
    return dirs


@pytest.mark.parametrize("case", sorted(ADVERSARIAL) + ["random_bytes"])
def test_adversarial_text_equals_hf(longtune, built, tmp_path, case):
    raw = random_bytes_text() if case == "random_bytes" else ADVERSARIAL[case].encode("utf-8")
    path = tmp_path / "text.bin"
    path.write_bytes(raw)
    text = raw.decode("utf-8", errors="replace")
    for name, directory in tokenizer_dirs(built).items():
        hf = Tokenizer.from_file(str(directory / "tokenizer.json"))
        expected = hf.encode(text, add_special_tokens=False).ids
        ours = our_ids(longtune, directory, path, raw=True)
        assert ours == expected, f"{name} / {case}: first difference at token " \
            f"{next((i for i, (a, b) in enumerate(zip(ours, expected)) if a != b), min(len(ours), len(expected)))}"


def test_every_corpus_book_equals_hf(longtune, built, corpus):  # noqa: F811
    books = sorted(Path(corpus).glob("*/*.txt"))
    assert len(books) > 70
    for name, directory in tokenizer_dirs(built).items():
        hf = Tokenizer.from_file(str(directory / "tokenizer.json"))
        lines = run([longtune, "tokenizer", "encode", "--tokenizer", directory, "--input", *books]).split("\n")
        assert len(lines) == len(books) + 1 and lines[-1] == ""
        for book, line in zip(books, lines):
            expected = hf.encode(read_text(book), add_special_tokens=False).ids
            assert [int(t) for t in line.split()] == expected, f"{name}: {book.name}"


def test_file_directory_and_bos_eos(longtune, built, corpus, tmp_path):  # noqa: F811
    """prepare-data takes the tokenizer.json itself, writes HF's ids, and BOS/EOS from tokenizer_config."""
    directory = built["llama3"]
    hf = Tokenizer.from_file(str(directory / "tokenizer.json"))
    out = tmp_path / "prepared"
    prepare(longtune, corpus, directory / "tokenizer.json", out)
    manifest = manifest_of(out)
    assert manifest["tokenizer"]["bos_id"] == hf.token_to_id("<|begin_of_text|>")
    assert manifest["tokenizer"]["eos_id"] == hf.token_to_id("<|end_of_text|>")
    assert manifest["tokenizer"]["vocab_size"] == hf.get_vocab_size(with_added_tokens=True)
    documents = load_split(out, manifest, "validation")
    assert len(documents) == 4
    for path, docs in documents.items():
        assert len(docs) == 1
        expected = hf.encode(read_text(Path(corpus) / path), add_special_tokens=False).ids
        assert docs[0].tolist() == expected, path


def write_variant(src, dst, edit):
    dst.mkdir()
    data = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    edit(data)
    (dst / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return dst / "tokenizer.json"


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.__setitem__("normalizer", {"type": "NFKC"}), "normalizer NFKC is not supported"),
    (lambda d: d["model"].__setitem__("type", "WordPiece"), "model.type WordPiece is not supported"),
    (lambda d: d.__setitem__("pre_tokenizer", {"type": "Whitespace"}), "pre-tokenizer type 'Whitespace'"),
    (lambda d: d.__setitem__("pre_tokenizer", None), "no ByteLevel step"),
    (lambda d: d["model"]["merges"].append("zzzq qqqz"), "is not in the vocabulary"),
    (lambda d: d["model"]["vocab"].__setitem__("x", "seven"), "expected an integer"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0]["pattern"].__setitem__("Regex", "(unclosed"),
     "does not compile"),
])
def test_bad_tokenizer_json_names_the_field(longtune, built, tmp_path, edit, message):
    path = write_variant(built["llama3"], tmp_path / "bad", edit)
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    result = subprocess.run([longtune, "tokenizer", "encode", "--tokenizer", str(path), "--input", str(text)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert str(path) in result.stderr and message in result.stderr, result.stderr
