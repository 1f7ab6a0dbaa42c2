"""longtune-run against torchrun (torch.distributed.run from the pip torch, run with --no-python):
the same worker environment and log layout for the same flags, --tee prefixes, kill-all-and-restart
on a worker failure with a root-cause summary, signal forwarding, and static ranks across two
launchers on one machine. Workers are small Python scripts, started as `python3 script` by both."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV_WORKER = r"""
import json, os, sys
print(json.dumps(dict(os.environ)), flush=True)
print("hello stderr from rank", os.environ["RANK"], file=sys.stderr, flush=True)
"""

# Each attempt of each rank appends one JSON record to $RECORD_DIR/<rank>.jsonl; the behaviour is
# picked by MODE: rank 1 exits 3 / kills itself; every other rank waits, recording a SIGTERM.
BEHAVIOUR_WORKER = r"""
import json, os, signal, sys, time
rank = int(os.environ["RANK"])
path = os.path.join(os.environ["RECORD_DIR"], f"{rank}.jsonl")
def record(**kw):
    kw.update(attempt=int(os.environ["TORCHELASTIC_RESTART_COUNT"]), pid=os.getpid())
    with open(path, "a") as f:
        f.write(json.dumps(kw) + "\n")
mode = os.environ["MODE"]
def on_term(sig, frame):
    record(event="signal", signal=sig)
    sys.exit(int(os.environ.get("EXIT_ON_TERM", "0")))
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode != "default_term":
    signal.signal(signal.SIGTERM, on_term)
record(event="start")
if rank == 1 and mode == "exit3":
    time.sleep(0.3); sys.exit(3)
if rank == 1 and mode == "sigkill":
    time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)
if rank == 0 and mode == "early_success":
    record(event="done"); sys.exit(0)
if mode == "early_success":
    time.sleep(1.0); record(event="done"); sys.exit(0)
time.sleep(60)
"""

RANK_KEYS = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
             "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID",
             "OMP_NUM_THREADS", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCHELASTIC_SIGNALS_TO_HANDLE",
             "TORCHELASTIC_USE_AGENT_STORE"]  # "True": the launcher hosts the store, as torchrun's agent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PET_") or k in RANK_KEYS or k.startswith("TORCHELASTIC_"):
            del env[k]
    env.pop("OMP_NUM_THREADS", None)
    env.pop("TORCH_NCCL_ASYNC_ERROR_HANDLING", None)
    return env


def run_tool(cmd, cwd, **kw):
    return subprocess.run(cmd, cwd=cwd, env=base_env(), capture_output=True, text=True, timeout=60, **kw)


def torchrun():
    return [sys.executable, "-m", "torch.distributed.run"]


def worker_envs(stdout):
    """The workers' JSON lines; run with --tee 1 so that long lines of different ranks do not mix."""
    envs = [json.loads(line.split(":", 1)[1] if line.startswith("[") else line)
            for line in stdout.splitlines() if "{" in line]
    return sorted(envs, key=lambda e: int(e["RANK"]))


def layout(log_dir):
    """Files under log_dir, the run folder (<run id>_<random>) written as RUN."""
    runs = list(Path(log_dir).iterdir())
    assert len(runs) == 1
    return {"/".join(("RUN",) + p.relative_to(runs[0]).parts) for p in runs[0].rglob("*") if p.is_file()}


@pytest.mark.parametrize("extra", [["--rdzv-id", "job7", "--max-restarts", "2"],
                                   ["--standalone", "--role", "trainer"]], ids=["static", "standalone"])
def test_environment_logs_and_tee_match_torchrun(launcher, tmp_path, extra):
    (tmp_path / "w.py").write_text(ENV_WORKER)
    results = {}
    for name, tool in [("torchrun", torchrun() + ["--no-python"]), ("longtune", [launcher])]:
        log_dir = tmp_path / f"logs_{name}"
        port = ["--master-port", str(free_port())] if "--standalone" not in extra else []
        r = run_tool(tool + ["--nproc-per-node", "2", "--log-dir", str(log_dir), "--tee", "3"] + port + extra
                     + ["python3", "w.py"], cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        results[name] = (r, worker_envs(r.stdout), layout(log_dir), log_dir, port)
    (t_run, t_envs, t_layout, _, t_port), (l_run, l_envs, l_layout, l_dir, l_port) = (
        results["torchrun"], results["longtune"])
    assert len(t_envs) == len(l_envs) == 2
    parent = set(base_env())
    for t, l in zip(t_envs, l_envs):
        assert set(t) - parent == set(l) - parent  # the same variables are added
        for k in RANK_KEYS:
            if k == "MASTER_PORT" and t_port:
                assert t[k] == t_port[1] and l[k] == l_port[1]
            elif k in ("MASTER_PORT", "TORCHELASTIC_RUN_ID") and not t_port:  # standalone: random
                assert l[k] == l_envs[0][k] and l[k] not in ("none", "29500")
                assert re.fullmatch(r"\d+" if k == "MASTER_PORT" else r"[0-9a-f-]{36}", l[k])
            else:
                assert t[k] == l[k], k
        assert Path(l["TORCHELASTIC_ERROR_FILE"]).parent.name == l["LOCAL_RANK"]
        assert Path(l["TORCHELASTIC_ERROR_FILE"]).parent.parent.name == "attempt_0"
    # Log layout: <log_dir>/<run_id>_XXXX/attempt_0/<local_rank>/{stdout,stderr}.log, as torchrun.
    assert t_layout == l_layout and len(l_layout) == 4
    assert next(l_dir.iterdir()).name.startswith(l_envs[0]["TORCHELASTIC_RUN_ID"] + "_")
    for rank in (0, 1):
        rank_dir = next(l_dir.glob("*_*")) / "attempt_0" / str(rank)
        assert json.loads((rank_dir / "stdout.log").read_text())["LOCAL_RANK"] == str(rank)
        assert (rank_dir / "stderr.log").read_text() == f"hello stderr from rank {rank}\n"
    # --tee: every console line carries torchrun's "[<role><local_rank>]:" prefix.
    role = "trainer" if "--role" in extra else "default"
    for r in (t_run, l_run):
        assert sorted(line.split("{")[0] for line in r.stdout.splitlines()) == [f"[{role}0]:", f"[{role}1]:"]
        err = sorted(line for line in r.stderr.splitlines() if "hello" in line)
        assert err == [f"[{role}{i}]:hello stderr from rank {i}" for i in (0, 1)]


def records(record_dir, rank):
    path = Path(record_dir) / f"{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_behaviour(launcher, tmp_path, mode, flags, env_extra=None):
    (tmp_path / "b.py").write_text(BEHAVIOUR_WORKER)
    env = base_env()
    env.update(RECORD_DIR=str(tmp_path), MODE=mode, **(env_extra or {}))
    return subprocess.run([launcher, "--nproc-per-node", "2", "--monitor-interval", "0.05"] + flags
                          + ["python3", "b.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


def test_failure_stops_others_and_restarts_then_reports_root_cause(launcher, tmp_path):
    r = run_behaviour(launcher, tmp_path, "exit3", ["--max-restarts", "2", "--redirects", "2",
                                                    "--log-dir", str(tmp_path / "logs")])
    assert r.returncode == 1, r.stderr  # torchrun's ChildFailedError exit status
    rank0, rank1 = records(tmp_path, 0), records(tmp_path, 1)
    assert [x["attempt"] for x in rank1] == [0, 1, 2]
    # Every attempt: rank 0 started, then got SIGTERM once rank 1 had failed.
    assert [(x["attempt"], x["event"]) for x in rank0] == [(a, e) for a in range(3) for e in ("start", "signal")]
    assert all(x["signal"] == signal.SIGTERM for x in rank0 if x["event"] == "signal")
    assert "Root Cause (first observed failure)" in r.stderr
    assert re.search(r"rank\s+: 1 \(local_rank: 1\)", r.stderr)
    assert re.search(rf"exitcode\s+: 3 \(pid: {rank1[-1]['pid']}\)", r.stderr)
    assert "after 2 restart(s)" in r.stderr
    log = re.search(r"log_file\s+: (\S+)", r.stderr).group(1)
    assert log.endswith("attempt_2/1/stderr.log") and Path(log).exists()


def test_worker_killed_by_signal(launcher, tmp_path):
    r = run_behaviour(launcher, tmp_path, "sigkill", [])
    assert r.returncode == 1
    assert re.search(r"exitcode\s+: -9 ", r.stderr) and "SIGKILL" in r.stderr
    assert [x["event"] for x in records(tmp_path, 0)] == ["start", "signal"]


def test_grace_period_then_sigkill(launcher, tmp_path):
    worker = tmp_path / "g.py"
    worker.write_text("import os, signal, sys, time\n"
                      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "if os.environ['RANK'] == '1':\n    time.sleep(0.3); sys.exit(4)\n"
                      "time.sleep(60)\n")
    start = time.monotonic()
    r = subprocess.run([launcher, "--nproc-per-node", "2", "--stop-grace-period", "1", "python3", str(worker)],
                       env=base_env(), capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - start
    assert r.returncode == 1 and "SIGKILL" in r.stderr and "exitcode  : 4" in r.stderr
    assert 1.0 < elapsed < 10


def test_successful_worker_waits_for_the_others(launcher, tmp_path):
    r = run_behaviour(launcher, tmp_path, "early_success", [])
    assert r.returncode == 0, r.stderr
    assert [x["event"] for x in records(tmp_path, 1)] == ["start", "done"]


@pytest.mark.parametrize("exit_on_term,expected", [("75", 75), (None, 128 + signal.SIGTERM)])
def test_sigterm_to_launcher_reaches_every_worker(launcher, tmp_path, exit_on_term, expected):
    (tmp_path / "b.py").write_text(BEHAVIOUR_WORKER)
    env = base_env()
    env.update(RECORD_DIR=str(tmp_path), MODE="wait" if exit_on_term else "default_term")
    if exit_on_term:
        env["EXIT_ON_TERM"] = exit_on_term
    proc = subprocess.Popen([launcher, "--nproc-per-node", "2", "python3", "b.py"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (records(tmp_path, 0) and records(tmp_path, 1)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == expected, err
    if exit_on_term:  # workers that handle SIGTERM record it; the launcher passes their status on
        for rank in (0, 1):
            assert [x["event"] for x in records(tmp_path, rank)] == ["start", "signal"]
            assert records(tmp_path, rank)[1]["signal"] == signal.SIGTERM


def test_two_launchers_on_one_machine_give_distinct_ranks(launcher, tmp_path):
    (tmp_path / "w.py").write_text(ENV_WORKER)
    port = str(free_port())
    procs = [subprocess.Popen([launcher, "--tee", "1", "--nnodes", "2", "--node_rank", str(node), "--nproc-per-node", "2",
                               "--master-addr", "127.0.0.1", "--master-port", port, "python3", "w.py"],
                              cwd=tmp_path, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for node in (0, 1)]
    envs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        envs += worker_envs(out)
    envs.sort(key=lambda e: int(e["RANK"]))
    assert [e["RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert {e["WORLD_SIZE"] for e in envs} == {"4"} and {e["GROUP_WORLD_SIZE"] for e in envs} == {"2"}
    assert [e["GROUP_RANK"] for e in envs] == ["0", "0", "1", "1"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "0", "1"]
    assert {e["MASTER_PORT"] for e in envs} == {port}


@pytest.mark.parametrize("args", [["--nnodes", "1:4", "true"], ["--bogus", "true"], ["--nproc-per-node", "2"],
                                  ["--rdzv-backend", "c10d", "true"], ["-m", "mod"], ["--node-rank", "1", "true"]])
def test_bad_command_lines_exit_2(launcher, args):
    r = subprocess.run([launcher] + args, env=base_env(), capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "longtune-run:" in r.stderr


def test_pet_environment_and_missing_program(launcher, tmp_path):
    (tmp_path / "w.py").write_text(ENV_WORKER)
    env = base_env()
    env.update(PET_NPROC_PER_NODE="3", PET_RDZV_ID="from-env")
    r = subprocess.run([launcher, "--tee", "1", "python3", "w.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=30)
    envs = worker_envs(r.stdout)
    assert r.returncode == 0 and [e["RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["TORCHELASTIC_RUN_ID"] for e in envs} == {"from-env"}
    r = subprocess.run([launcher, "--nproc-per-node", "2", "/nonexistent/program"], env=base_env(),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot execute '/nonexistent/program'" in r.stderr
