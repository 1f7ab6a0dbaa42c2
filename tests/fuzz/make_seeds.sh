#!/usr/bin/env bash
# Regenerates the seed corpora under tests/fuzz/corpus/ from real files: the shipped job files,
# safetensors and config.json written by HF's own libraries (safetensors, transformers), and the
# token shard, manifest, tokenizer, checkpoint marker, reader state and sharding.json of a tiny
# corpus prepared and trained (two ranks) by our binaries. Run from the repository root after a
# build; the seeds are committed, so this is needed only when a format changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/setup.sh)"
BIN=${BIN:-build/bin}
C=tests/fuzz/corpus
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$C"
mkdir -p "$C"/{safetensors_fuzz,hf_config_fuzz,job_config_fuzz,token_shard_fuzz,manifest_fuzz,tokenizer_fuzz,checkpoint_marker_fuzz}
mkdir -p "$C"/{bpe_tokenizer_fuzz,import_tokens_fuzz}

# Job files as users write them.
for f in configs/*.yaml; do cp "$f" "$C/job_config_fuzz/$(basename "$f")"; done

# Outside writers: safetensors (several dtypes, metadata) and LLaMA config.json of each RoPE schema.
"$LONGTUNE_PYTHON" - "$C" <<'PY'
import json, sys, torch
from safetensors.torch import save_file
from transformers import LlamaConfig
c = sys.argv[1]
save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16),
           "h": torch.zeros(2, dtype=torch.float16), "i": torch.arange(4), "m": torch.tensor([True, False])},
          f"{c}/safetensors_fuzz/dtypes.safetensors", metadata={"format": "pt"})
save_file({"empty": torch.zeros(0), "scalar": torch.tensor(1.5)}, f"{c}/safetensors_fuzz/edge.safetensors")
small = dict(vocab_size=320, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048)
variants = {
    "plain": {},
    "linear": {"rope_scaling": {"type": "linear", "factor": 4.0}},
    "dynamic": {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
    "yarn": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048}},
    "llama3": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192}, "tie_word_embeddings": True,
               "max_position_embeddings": 131072},
}
for name, extra in variants.items():
    text = LlamaConfig(**{**small, **extra}).to_json_string()
    open(f"{c}/hf_config_fuzz/{name}.json", "w").write(text)
PY

# Our own files, from a tiny corpus.
mkdir -p "$WORK/corpus/train" "$WORK/corpus/validation"
for b in 0 1 2; do
  printf 'The whale and the sea, %s. A long voyage; the captain said 1851.\nNight storm, harbour, deck.\n' "$b" \
    > "$WORK/corpus/train/$b.txt"
done
cp "$WORK/corpus/train/0.txt" "$WORK/corpus/validation/0.txt"
"$BIN/longtune" tokenizer train --input "$WORK/corpus" --vocab-size 300 --out "$WORK/tok" >/dev/null
"$BIN/longtune" prepare-data --input "$WORK/corpus" --tokenizer "$WORK/tok.model" --out "$WORK/tokens" --quiet
cp "$WORK/tok.model" "$C/tokenizer_fuzz/tok.model"
# bpe_tokenizer_fuzz: tokenizer.json files HF tokenizers trains (each family's pre-tokenizer chain,
# small vocabularies), a NUL, then text to encode (see fuzz/bpe_tokenizer_fuzz.cpp).
"$LONGTUNE_PYTHON" - "$C" "$WORK/corpus" "$WORK/bpe" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests/reference")
import bpe_tokenizers
bpe_tokenizers.VOCAB = 300
c, corpus, work = sys.argv[1:]
for kind in bpe_tokenizers.KINDS:
    folder = bpe_tokenizers.build(kind, corpus, Path(work) / kind)
    text = "I'm 12345 <|endoftext|> the whale\r\n\t caf\u00e9 \u4e2d\u6587 \U0001f642".encode()
    Path(f"{c}/bpe_tokenizer_fuzz/{kind}.json").write_bytes((folder / "tokenizer.json").read_bytes() + b"\0" + text)
PY
# import_tokens_fuzz: JSONL of ids as other tools write it.
printf '{"ids": [5, 6, 7]}\n\n{"input_ids": [999, 0], "meta": {"source": "x"}}\n' > "$C/import_tokens_fuzz/docs.jsonl"
"$LONGTUNE_PYTHON" -c 'import json; print("\n".join(json.dumps({"ids": list(range(i, i + 50))}) for i in range(0, 900, 90)))' \
  > "$C/import_tokens_fuzz/ranges.jsonl"
for f in "$WORK"/tokens/train/*.bin; do cp "$f" "$C/token_shard_fuzz/"; done
# manifest_fuzz: first byte even = manifest, odd = reader state (see fuzz/manifest_fuzz.cpp).
{ printf '\x00'; cat "$WORK/tokens/manifest.json"; } > "$C/manifest_fuzz/manifest.json"
cat > "$WORK/job.yaml" <<YAML
model: {source: "preset:tiny"}
data: {train: $WORK/tokens/train, seq_len: 16}
train: {steps: 1, global_batch: 2, micro_batch: 1, run_dir: $WORK/run}
eval: {stride: 8}
YAML
"$BIN/longtune-run" --nproc-per-node 2 "$BIN/longtune" train "$WORK/job.yaml" >/dev/null 2>&1
STEP=$(ls -d "$WORK"/run/checkpoints/step_* | tail -n 1)
{ printf '\x01'; cat "$STEP/data.json"; } > "$C/manifest_fuzz/reader_state.json"
# checkpoint_marker_fuzz: first byte even = completion marker, odd = sharding.json.
{ printf '\x00'; cat "$STEP/COMPLETE"; } > "$C/checkpoint_marker_fuzz/complete.json"
{ printf '\x01'; cat "$STEP/sharding.json"; } > "$C/checkpoint_marker_fuzz/sharding.json"
cp "$STEP/model_config.json" "$C/hf_config_fuzz/checkpoint_model_config.json"
du -sh "$C"/* >&2
