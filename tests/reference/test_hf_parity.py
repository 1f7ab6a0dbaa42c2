"""longtune's LLaMA against HF transformers (the oracle): logits, gradients, bf16, export, eval."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hf_models import CASES, make_model, write_tokens

SEQ = 48  # > max_position_embeddings of the base config


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return result.stdout


def rel_err(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_gradients_fp32(case, tmp_path, longtune):
    model = make_model(case)
    model.save_pretrained(tmp_path / "hf")
    ids = torch.randint(0, model.config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
    write_tokens(tmp_path / "ids.txt", ids)

    out = model(ids, labels=ids)
    out.loss.backward()
    for flag in ([], ["--activation-checkpointing"]):
        run([longtune, "debug", "logits", "--model", str(tmp_path / "hf"), "--tokens", str(tmp_path / "ids.txt"),
             "--batch", "2", "--backward", "--out", str(tmp_path / "ours.safetensors")] + flag)
        ours = load_file(tmp_path / "ours.safetensors")
        err = rel_err(ours["logits"], out.logits.detach())
        print(f"{case}{flag}: logits max|d|/max|logits| = {err:.2e}")
        assert err <= 1e-5
        assert abs(ours["loss"].item() - out.loss.item()) <= 1e-5 * abs(out.loss.item())
        worst = 0.0
        for name, p in model.named_parameters():
            g = ours["grad." + name]
            worst = max(worst, rel_err(g, p.grad))
            assert rel_err(g, p.grad) <= 1e-4, f"{case}: gradient of {name}"
        print(f"{case}{flag}: worst gradient rel err = {worst:.2e}")


@pytest.mark.parametrize("case", ["mha", "gqa", "linear"])
def test_logits_bf16(case, tmp_path, longtune):
    model = make_model(case, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "hf")
    ids = torch.randint(0, model.config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(2))
    write_tokens(tmp_path / "ids.txt", ids)
    with torch.no_grad():
        theirs = model(ids).logits.float()
    run([longtune, "debug", "logits", "--model", str(tmp_path / "hf"), "--tokens", str(tmp_path / "ids.txt"),
         "--dtype", "bfloat16", "--out", str(tmp_path / "ours.safetensors")])
    err = rel_err(load_file(tmp_path / "ours.safetensors")["logits"], theirs)
    print(f"{case} bf16: logits max|d|/max|logits| = {err:.2e}")
    assert err <= 2e-2  # bf16 keeps 8 mantissa bits; op order differs slightly between the two


def test_eval_perplexity_equals_hf_loss_per_window(tmp_path, longtune):
    model = make_model("gqa")
    model.save_pretrained(tmp_path / "hf")
    ids = torch.randint(0, model.config.vocab_size, (70,), generator=torch.Generator().manual_seed(3))
    write_tokens(tmp_path / "ids.txt", ids)
    result = json.loads(run([longtune, "eval", "perplexity", "--model", str(tmp_path / "hf"),
                             "--tokens", str(tmp_path / "ids.txt"), "--seq-len", "32"]))
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, 70, 32):
            w = ids[begin:begin + 32].unsqueeze(0)
            if w.shape[1] < 2:
                continue
            total += model(w, labels=w).loss.item() * (w.shape[1] - 1)
            count += w.shape[1] - 1
    assert result["tokens"] == count == 31 + 31 + 5
    assert abs(result["nll"] - total / count) <= 1e-5 * total / count


TF_CHECK = r"""
import sys, json, torch
from transformers import LlamaForCausalLM
m = LlamaForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
ids = torch.tensor([[int(t) for t in open(sys.argv[2]).read().split()]])
with torch.no_grad():
    print(json.dumps({"logits": m(ids).logits.flatten().tolist(),
                      "max_pos": m.config.max_position_embeddings}))
"""


@pytest.mark.parametrize("transformers_major", [5, 4])
def test_export_loads_in_transformers(transformers_major, tmp_path, longtune):
    model = make_model("gqa")
    model.save_pretrained(tmp_path / "hf")
    run([longtune, "export-hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "out"),
         "--rope-scaling", "linear:4", "--max-shard-gb", "0.00005"])  # forces a sharded index
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["rope_scaling"]["type"] == "linear" and config["rope_scaling"]["factor"] == 4
    assert config["max_position_embeddings"] == 4 * 32
    ids = torch.randint(0, 211, (1, 100), generator=torch.Generator().manual_seed(4))
    write_tokens(tmp_path / "ids.txt", ids)
    env = dict(os.environ)
    if transformers_major == 4:
        tf4 = os.environ.get("LONGTUNE_TRANSFORMERS4")
        if not tf4:
            pytest.skip("LONGTUNE_TRANSFORMERS4 not set (scripts/setup.sh installs transformers 4.x there)")
        env["PYTHONPATH"] = tf4
    check = subprocess.run([sys.executable, "-c", TF_CHECK, str(tmp_path / "out"), str(tmp_path / "ids.txt")],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    loaded = json.loads(check.stdout.strip().splitlines()[-1])
    assert loaded["max_pos"] == 128
    run([longtune, "debug", "logits", "--model", str(tmp_path / "out"), "--tokens", str(tmp_path / "ids.txt"),
         "--out", str(tmp_path / "ours.safetensors")])
    ours = load_file(tmp_path / "ours.safetensors")["logits"].flatten()
    theirs = torch.tensor(loaded["logits"])
    assert rel_err(ours, theirs) <= 1e-5
