"""Byte-level BPE tokenizers for the oracle tests, built by HF tokenizers itself (test-only Python):
small vocabularies trained on the embedded corpus with the exact pre-tokenizer chains of the real
families, so our C++ BPE is checked against HF on the same tokenizer.json.

  gpt2      ByteLevel(add_prefix_space=False, use_regex=True), <|endoftext|>, merges as "a b" strings
  llama3    Split(Llama 3's regex, Isolated) + ByteLevel(use_regex=False), ignore_merges, 256 special
            tokens <|begin_of_text|> ... as Llama 3 numbers them (after the vocabulary)
  smollm    Digits(individual_digits=True) + ByteLevel(add_prefix_space=False), as SmolLM2's
  prefixed  ByteLevel(add_prefix_space=True) plus added tokens with lstrip / rstrip / single_word
            and a non-special added token, merges as ["a", "b"] pairs
"""
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
KINDS = ("gpt2", "llama3", "smollm", "prefixed")
VOCAB = 3000


def _books(corpus):
    return sorted((Path(corpus) / "train").glob("*.txt"))


def _train(corpus, pre_tokenizer, special, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(p) for p in _books(corpus)], trainer)
    return tok


def _merges_as_strings(path):
    """Rewrites merges into the older "a b" layout (what GPT-2's and Llama 3's files carry)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"]["merges"] = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in data["model"]["merges"]]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def build(kind, corpus, out_dir):
    """Writes OUT_DIR/tokenizer.json and tokenizer_config.json for `kind`; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {}
    if kind == "gpt2":
        tok = _train(corpus, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), ["<|endoftext|>"])
        config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    elif kind == "llama3":
        tok = _train(corpus, pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]), [],
            ignore_merges=True)
        names = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(254)]
        tok.add_special_tokens(names)
        config = {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>", "lstrip": False}}
    elif kind == "smollm":
        tok = _train(corpus, pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]),
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    elif kind == "prefixed":
        tok = _train(corpus, pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), ["<s>", "</s>"])
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
                                AddedToken("<sep>", rstrip=True, special=True),
                                AddedToken("[word]", single_word=True, special=True)])
        tok.add_tokens([AddedToken("Jerusalem!", normalized=False), AddedToken(" the Lord", normalized=True)])
        config = {"bos_token": "<s>", "eos_token": "</s>"}
    else:
        raise ValueError(kind)
    path = out / "tokenizer.json"
    tok.save(str(path))
    if kind in ("gpt2", "llama3"):
        _merges_as_strings(path)
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out
