"""A Llama-3-style job end to end against transformers: an HF model directory whose tokenizer is a
byte-level BPE tokenizer.json (Llama 3's pre-tokenizer, <|begin_of_text|> / <|end_of_text|> after the
vocabulary, not ids 1 and 2), rope_theta 500000 and grouped-query attention goes through
prepare-data -> train with Position Interpolation -> export-hf, and transformers loads the export
with its own AutoTokenizer: same ids as our BPE, same logits as ours, the PI scaling recorded over
the model's own window. Also: PI on a model that already carries llama3 scaling is refused by name."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import bpe_tokenizers
from prepare_data_support import corpus, manifest_of, read_text  # noqa: F401

WINDOW = 64  # the "pretrained" window; PI x4 trains at 256

JOB = """\
model:
  source: {model}
  dtype: float32
  rope_scaling:
    type: linear
    factor: 4.0
data:
  train: {data}/train
  validation: {data}/validation
  tokenizer: {model}
  seq_len: 256
  seed: 1
optim:
  lr: 1.0e-3
schedule:
  warmup_steps: 1
train:
  steps: 3
  global_batch: 2
  micro_batch: 1
  precision: fp32
  eval_every: 3
  eval_batches: 1
  run_dir: {run_dir}
  deterministic: true
  cpu_threads: 2
checkpoint:
  every: 3
  export_hf_at_end: true
parallel:
  sharding: no_shard
eval:
  stride: 128
"""


def run(cmd, expect=0, timeout=600):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == expect, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def make_llama3_style_model(directory, tokenizer_dir, rope_parameters=None):
    """A random-init HF LLaMA with Llama 3's conventions and its tokenizer files beside it (the
    tokenizer_config.json as Meta's Llama 3 repositories write it)."""
    hf = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    bos, eos = hf.token_to_id("<|begin_of_text|>"), hf.token_to_id("<|end_of_text|>")
    config = LlamaConfig(vocab_size=hf.get_vocab_size(), hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=WINDOW,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos,
                         rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 500000.0})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    shutil.copy(tokenizer_dir / "tokenizer.json", directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast"}))
    return bos, eos


@pytest.fixture(scope="module")
def llama3(tmp_path_factory, corpus):  # noqa: F811
    root = tmp_path_factory.mktemp("llama3")
    tokenizer_dir = bpe_tokenizers.build("llama3", corpus, root / "tokenizer")
    model = root / "model"
    bos, eos = make_llama3_style_model(model, tokenizer_dir)
    return {"root": root, "model": model, "bos": bos, "eos": eos}


def test_prepare_train_pi_export_loads_in_transformers(longtune, llama3, corpus, tmp_path):  # noqa: F811
    model, data, run_dir = llama3["model"], tmp_path / "tokens", tmp_path / "run"
    run([longtune, "prepare-data", "--input", corpus, "--tokenizer", model, "--out", data, "--splits",
         "train,validation", "--quiet"])
    manifest = manifest_of(data)
    assert manifest["tokenizer"]["path"].endswith("tokenizer.json")
    assert (manifest["tokenizer"]["bos_id"], manifest["tokenizer"]["eos_id"]) == (llama3["bos"], llama3["eos"])
    assert (llama3["bos"], llama3["eos"]) != (1, 2)

    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(model=model, data=data, run_dir=run_dir))
    result = run([longtune, "train", job])
    assert "factor" not in result.stderr or "would match" not in result.stderr, result.stderr  # 64 x 4 = seq_len

    export = run_dir / "hf"
    config = json.loads((export / "config.json").read_text())
    assert config["max_position_embeddings"] == 4 * WINDOW
    scaling = config.get("rope_scaling") or config["rope_parameters"]
    assert scaling["factor"] == 4.0 and scaling["original_max_position_embeddings"] == WINDOW
    assert (config["bos_token_id"], config["eos_token_id"]) == (llama3["bos"], llama3["eos"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (export / name).read_bytes() == (model / name).read_bytes(), name

    # transformers' own tokenizer from the export gives our ids on a real book.
    book = sorted((Path(corpus) / "validation").glob("*.txt"))[0]
    hf_tokenizer = AutoTokenizer.from_pretrained(str(export))
    expected = hf_tokenizer(read_text(book), add_special_tokens=False)["input_ids"]
    ours = [int(t) for t in run([longtune, "tokenizer", "encode", "--tokenizer", export, "--input", book]).stdout.split()]
    assert ours == expected
    assert hf_tokenizer.bos_token_id == llama3["bos"] and hf_tokenizer.eos_token_id == llama3["eos"]

    # ... and its model gives our logits at the PI window.
    ids = torch.tensor([[llama3["bos"]] + expected[:4 * WINDOW - 1]])
    tokens = tmp_path / "ids.txt"
    tokens.write_text(" ".join(map(str, ids.flatten().tolist())))
    dump = tmp_path / "ours.safetensors"
    run([longtune, "debug", "logits", "--model", export, "--tokens", tokens, "--batch", "1", "--out", dump])
    hf_model = LlamaForCausalLM.from_pretrained(str(export), dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf_model(ids).logits
    ours_logits = load_file(str(dump))["logits"]
    assert (ours_logits - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def test_pi_on_a_llama3_scaled_model_is_refused(longtune, llama3, tmp_path):
    scaled = tmp_path / "llama31"
    make_llama3_style_model(scaled, llama3["root"] / "tokenizer",
                            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16, "rope_theta": 500000.0})
    tokens = tmp_path / "ids.txt"
    tokens.write_text(" ".join(str(i) for i in range(3, 40)) + "\n")
    result = run([longtune, "eval", "perplexity", "--model", scaled, "--tokens", tokens, "--rope-scaling", "linear:2"],
                 expect=1)
    assert "already carries llama3 scaling (factor 8 over its pretrained window 16)" in result.stderr, result.stderr
