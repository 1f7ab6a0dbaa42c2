"""The PI study end to end at smoke size (`scripts/study.sh --smoke`): every phase runs (corpus,
drills, prepare-data, pretraining, PI and FT fine-tuning with checkpoints, perplexity at every window,
passkey at L'), and the report holds the four verdicts, the tables and the charts. The numbers of
a smoke run mean nothing; the full and --ci runs are documented commands (docs/study_cpu.md)."""
import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_smoke_study_writes_the_report(tmp_path, longtune):
    out = tmp_path / "study"
    env = dict(os.environ, LONGTUNE_BIN=longtune)
    result = subprocess.run([str(REPO / "scripts" / "study.sh"), "--smoke", str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr

    study = json.loads((out / "study.json").read_text())
    assert (study["L"], study["factor"], study["steps"]) == (128, 4, [2, 4])
    for name in ["base", "pi_step_0", "pi_step_4", "ft_step_4"]:
        windows = [r["window"] for r in json.loads((out / "eval" / f"{name}.json").read_text())["results"]]
        assert windows == [128, 256, 512], name
    for name in ["pi_step_2", "ft_step_2", "base_step_6"]:
        windows = [r["window"] for r in json.loads((out / "eval" / f"{name}.json").read_text())["results"]]
        assert windows == [128, 512], name
    for name in ["pi_step_0", "ft_step_0", "pi_step_2", "ft_step_4"]:
        passkey = json.loads((out / "passkey" / f"{name}.json").read_text())
        assert passkey["length"] == 512 and len(passkey["trials"]) == 4
        assert all(t["prompt_tokens"] <= 512 for t in passkey["trials"])

    report = (out / "report" / "study.md").read_text()
    verdicts = re.findall(r"\*\*(agrees|partly agrees|disagrees)\*\*", report)
    assert len(verdicts) == 4, report
    for part in ["## Table 1 in miniature", "## Table 3 in miniature", "## Table 4 in miniature",
                 "| pretrain |", "retrieval drills"]:
        assert part in report
    for png in ["ppl_vs_window.png", "ppl_vs_steps.png", "passkey_pi.png", "passkey_ft.png",
                "passkey_digits_pi.png", "passkey_digits_ft.png"]:
        assert (out / "report" / png).stat().st_size > 1000, png
    phases = [line.split("\t")[0] for line in (out / "timings.tsv").read_text().splitlines()]
    assert phases == ["corpus", "drills", "prepare_data", "pretrain", "finetune_pi", "finetune_ft",
                      "perplexity", "passkey"]
