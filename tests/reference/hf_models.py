"""Builds random tiny HF LlamaForCausalLM checkpoints for the oracle tests (test-only Python)."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

BASE = dict(vocab_size=211, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
            rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)

# name -> (config overrides, rope_parameters or None). Sequences in the tests (48 tokens) are
# longer than max_position_embeddings (32), so every scaling runs beyond the original window.
CASES = {
    "mha": ({}, None),
    "gqa": ({"num_key_value_heads": 2}, None),
    "tied": ({"tie_word_embeddings": True}, None),
    "odd_head_dim": ({"head_dim": 10, "num_key_value_heads": 2}, None),
    "theta": ({}, {"rope_type": "default", "rope_theta": 500000.0}),
    "linear": ({}, {"rope_type": "linear", "factor": 2.5, "rope_theta": 10000.0}),
    "dynamic": ({}, {"rope_type": "dynamic", "factor": 3.0, "rope_theta": 10000.0}),
    "yarn": ({"max_position_embeddings": 128},
             {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
              "beta_fast": 16.0, "beta_slow": 2.0, "rope_theta": 10000.0}),
    "yarn_mscale": ({"max_position_embeddings": 128},
                    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                     "mscale": 1.0, "mscale_all_dim": 0.5, "rope_theta": 10000.0}),
    "llama3": ({"max_position_embeddings": 256},
               {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32, "rope_theta": 10000.0}),
}


def make_model(case, seed=0, dtype=torch.float32):
    overrides, rope = CASES[case]
    kwargs = dict(BASE, **overrides)
    if rope is not None:
        kwargs["rope_parameters"] = rope
    config = LlamaConfig(**kwargs)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    # Norm weights start at 1; perturb them so the test also sees the norm weights' gradients.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.eval()
    return model


def write_tokens(path, ids):
    with open(path, "w") as f:
        f.write(" ".join(str(int(i)) for i in ids.flatten().tolist()) + "\n")
