"""The evaluation protocols against HF transformers (the oracle).

1. `eval perplexity` over token documents for several windows in one run equals HF's
   LlamaForCausalLM running jquesnelle/yarn's compute_perplexity loop (sliding window, BOS prepended,
   target_ids[:, :-trg_len] = -100, ppl = exp(mean of the window losses)), plus the token-weighted
   figure. Stated error: |ours - HF| / HF <= 1e-5 on both figures (fp32; printed).
2. `eval passkey`: every prompt equals Landmark Attention's generate_prompt (epfml/landmark-attention,
   llama/run_test.py) for the same filler lengths and key, its tokenization (Python sentencepiece)
   matches our prompt length and key distance, and HF's greedy generate() (max_new_tokens, stop at EOS)
   yields the same tokens as our KV-cache decoder.
"""
import json
import math
import re
import subprocess

import pytest
import sentencepiece as spm
import torch

from hf_models import make_model, BASE


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stderr}"
    return result.stdout


def yarn_perplexity(model, docs, max_length, stride, bos):
    """compute_perplexity's loop with add_start_token, per document; returns (ppl, token ppl, windows)."""
    losses, token_nll, tokens = [], 0.0, 0
    for doc in docs:
        encoded = torch.tensor([doc])
        seq_len = encoded.size(1)
        prev_end_loc = 0
        for begin_loc in range(0, seq_len, stride):
            end_loc = min(begin_loc + max_length - 1, seq_len)
            trg_len = end_loc - prev_end_loc
            input_ids = torch.cat([torch.tensor([[bos]]), encoded[:, begin_loc:end_loc]], dim=1)
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                loss = model(input_ids, labels=target_ids).loss.item()
            losses.append(loss)
            scored = int((target_ids[:, 1:] != -100).sum())
            token_nll += loss * scored
            tokens += scored
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
    return math.exp(sum(losses) / len(losses)), math.exp(token_nll / tokens), len(losses)


@pytest.mark.parametrize("case", ["gqa", "linear"])
def test_sliding_window_perplexity_equals_hf(case, tmp_path, longtune):
    model = make_model(case)
    model.save_pretrained(tmp_path / "hf")
    g = torch.Generator().manual_seed(11)
    docs = [torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in (70, 5, 131, 40)]
    with open(tmp_path / "docs.txt", "w") as f:
        for d in docs:
            f.write(" ".join(map(str, d)) + "\n")
    windows, stride = [16, 32, 48], 8  # 48 > the model's window of 32
    out = run([longtune, "eval", "perplexity", "--quiet", "--model", tmp_path / "hf", "--tokens",
               tmp_path / "docs.txt", "--windows", ",".join(map(str, windows)), "--stride", str(stride),
               "--batch", "3", "--out", tmp_path / "ppl.json"])
    lines = [json.loads(line) for line in out.splitlines()]
    report = json.loads((tmp_path / "ppl.json").read_text())
    assert [r["window"] for r in lines] == windows == [r["window"] for r in report["results"]]
    for ours in lines:
        ppl, token_ppl, n = yarn_perplexity(model, docs, ours["window"], stride, BASE["bos_token_id"])
        err = abs(ours["ppl"] - ppl) / ppl
        token_err = abs(ours["token_ppl"] - token_ppl) / token_ppl
        print(f"{case} W={ours['window']}: ppl ours {ours['ppl']:.6f} HF {ppl:.6f} rel err {err:.1e}; "
              f"token ppl rel err {token_err:.1e}")
        assert ours["windows"] == n
        assert ours["documents"] == len(docs)
        assert err <= 1e-5 and token_err <= 1e-5


# Landmark Attention's generate_prompt (llama/run_test.py) with the random choices made explicit.
def landmark_prompt(n_garbage_prefix, n_garbage_suffix, pass_key):
    task_description = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
    garbage = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    garbage_inf = " ".join([garbage] * 2000)
    assert len(garbage_inf) >= n_garbage_prefix + n_garbage_suffix
    garbage_prefix = garbage_inf[:n_garbage_prefix]
    garbage_suffix = garbage_inf[:n_garbage_suffix]
    information_line = f"The pass key is {pass_key}. Remember it. {pass_key} is the pass key."
    final_question = "What is the pass key? The pass key is"
    lines = [task_description, garbage_prefix, information_line, garbage_suffix, final_question]
    return "\n".join(lines)


def test_passkey_prompts_and_greedy_tokens_equal_the_references(tmp_path, longtune):
    # A tokenizer that knows the prompt's words and digits, and a random model over its vocabulary.
    corpus = tmp_path / "corpus" / "train"
    corpus.mkdir(parents=True)
    text = "".join(landmark_prompt(i * 31, i * 17, 10000 + 977 * i) + f" {10000 + 977 * i}.\n" for i in range(50))
    (corpus / "1.txt").write_text(text)
    run([longtune, "tokenizer", "train", "--input", tmp_path / "corpus", "--vocab-size", "400",
         "--out", tmp_path / "tok"])
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok.model"))
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**dict(BASE, vocab_size=sp.get_piece_size(), max_position_embeddings=256))
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights: peaked logits, so no greedy near-ties
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    model.eval()
    model.save_pretrained(tmp_path / "hf")

    length, new_tokens = 200, 6
    run([longtune, "eval", "passkey", "--quiet", "--model", tmp_path / "hf", "--tokenizer", tmp_path / "tok.model",
         "--length", str(length), "--distances", "5", "--trials", "2", "--max-new-tokens", str(new_tokens),
         "--seed", "3", "--out", tmp_path / "passkey.json", "--plot", tmp_path / "passkey.png"])
    result = json.loads((tmp_path / "passkey.json").read_text())
    assert (tmp_path / "passkey.png").stat().st_size > 1000
    assert [d["k"] for d in result["distances"]] == [40, 80, 120, 160, 200]
    assert len(result["trials"]) == 10
    for trial in result["trials"]:
        prompt = landmark_prompt(trial["prefix_chars"], trial["suffix_chars"], trial["key"])
        assert 10000 <= trial["key"] <= 99999
        ids = [sp.bos_id()] + sp.encode(prompt)
        assert len(ids) == trial["prompt_tokens"] <= length
        # The key's first digit lies `distance` tokens from the end: the first token whose decoded
        # prefix of the prompt reaches past the digit's offset holds it.
        key_offset = prompt.index(f"The pass key is {trial['key']}") + len("The pass key is ")
        body = ids[1:]
        key_token = next(i for i in range(len(body)) if len(sp.decode(body[:i + 1])) > key_offset) + 1
        assert trial["distance"] == len(ids) - key_token
        assert trial["distance"] <= trial["target_distance"] or trial["suffix_chars"] == 0
        if trial["target_distance"] <= 80:  # well inside what the prompt allows: within 2 tokens
            assert trial["target_distance"] - 2 <= trial["distance"]
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                                       eos_token_id=sp.eos_id(), pad_token_id=sp.eos_id())[0, len(ids):].tolist()
        assert trial["generated"] == generated, f"k={trial['target_distance']} key={trial['key']}"
        output = sp.decode([t for t in generated if t != sp.eos_id()])
        found = re.search(r"\d+", output)
        assert trial["success"] == (found is not None and int(found.group()) == trial["key"])
