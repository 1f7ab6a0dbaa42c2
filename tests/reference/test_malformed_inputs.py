"""Bad model directories: each must give a clear error naming the file and tensor, and exit non-zero."""
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_models import make_model, write_tokens


def fails_with(cmd, *needles):
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0, f"expected failure: {cmd}"
    for needle in needles:
        assert needle in result.stderr, f"'{needle}' not in: {result.stderr}"
    assert "Segmentation" not in result.stderr and result.returncode > 0


@pytest.fixture
def model_dir(tmp_path):
    make_model("mha").save_pretrained(tmp_path / "hf")
    write_tokens(tmp_path / "ids.txt", torch.arange(10))
    return tmp_path


def eval_cmd(longtune, d):
    return [longtune, "eval", "perplexity", "--model", str(d / "hf"), "--tokens", str(d / "ids.txt")]


def edit_weights(d, fn):
    path = d / "hf" / "model.safetensors"
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor(model_dir, longtune):
    edit_weights(model_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    fails_with(eval_cmd(longtune, model_dir), "model.layers.1.mlp.up_proj.weight", "missing")


def test_unexpected_tensor(model_dir, longtune):
    edit_weights(model_dir, lambda t: t.__setitem__("model.layers.7.extra", torch.zeros(3)))
    fails_with(eval_cmd(longtune, model_dir), "model.safetensors", "model.layers.7.extra", "unexpected")


def test_misshaped_tensor(model_dir, longtune):
    edit_weights(model_dir, lambda t: t.__setitem__("model.norm.weight", torch.zeros(65)))
    fails_with(eval_cmd(longtune, model_dir), "model.safetensors", "model.norm.weight", "shape")


def test_stale_inv_freq_is_ignored(model_dir, longtune):
    edit_weights(model_dir, lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(8)))
    assert subprocess.run(eval_cmd(longtune, model_dir), capture_output=True).returncode == 0


def test_truncated_file(model_dir, longtune):
    path = model_dir / "hf" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    fails_with(eval_cmd(longtune, model_dir), "model.safetensors")


def test_invalid_config_json(model_dir, longtune):
    (model_dir / "hf" / "config.json").write_text("{ not json")
    fails_with(eval_cmd(longtune, model_dir), "config.json", "invalid JSON")


def test_config_missing_field(model_dir, longtune):
    path = model_dir / "hf" / "config.json"
    config = json.loads(path.read_text())
    del config["hidden_size"]
    path.write_text(json.dumps(config))
    fails_with(eval_cmd(longtune, model_dir), "config.json", "hidden_size")


def test_unknown_rope_type(model_dir, longtune):
    path = model_dir / "hf" / "config.json"
    config = json.loads(path.read_text())
    config["rope_parameters"] = {"rope_type": "spiral", "factor": 2.0, "rope_theta": 10000.0}
    path.write_text(json.dumps(config))
    fails_with(eval_cmd(longtune, model_dir), "config.json", "spiral")


def test_missing_shard_listed_in_index(model_dir, longtune):
    names = list(load_file(model_dir / "hf" / "model.safetensors"))
    (model_dir / "hf" / "model.safetensors").rename(model_dir / "hf" / "model-00001-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names}
    weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors"
    index = {"metadata": {"total_size": 1}, "weight_map": weight_map}
    (model_dir / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    fails_with(eval_cmd(longtune, model_dir), "model-00002-of-00002.safetensors", "does not exist")


def test_token_out_of_vocab(model_dir, longtune):
    (model_dir / "ids.txt").write_text("1 2 99999\n")
    fails_with(eval_cmd(longtune, model_dir), "ids.txt", "99999", "vocabulary")


def test_missing_model_dir(tmp_path, longtune):
    fails_with([longtune, "inspect", str(tmp_path / "nope")], "nope", "does not exist")
