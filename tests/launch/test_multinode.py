"""Two longtune-run launchers as two nodes on loopback, agreeing on restart rounds through node 0's store:
a stalled worker (SIGSTOP) and a launcher killed with SIGKILL and started again both end, after a
coordinated restart and resume, in the weights of an uninterrupted run (real `longtune train`, Gloo);
a node that never comes back is a named timeout after --rdzv-timeout; node 0's restart (a fresh store)
is rejoined with the round count carried on; --max-restarts counts rounds of the whole job; a signal
to one launcher stops every node; workers reach the launcher's store as torchrun's agent store.
Every process is bounded by a timeout."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, INTEGRATION / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = _load("integration_conftest", "conftest.py")
dist = _load("integration_distributed", "test_distributed.py")
longtune, data = corpus.longtune, corpus.data  # the integration tests' fixtures: binary, tiny corpus

# Small timeouts so that every failure is seen in seconds: the collective timeout turns a stalled
# worker into an error exit, the keep-alive window a dead launcher into a failed round.
FAST = ["--monitor-interval", "0.05", "--stop-grace-period", "5", "--rdzv-conf",
        "keep_alive_interval=0.5,keep_alive_max_attempt=4"]


class Nodes:
    """Launchers started by a test; whatever is left is killed at teardown (workers too)."""

    def __init__(self, launcher, port, tmp_path):
        self.launcher, self.port, self.tmp_path, self.procs = launcher, port, tmp_path, []

    def start(self, rank, flags, command, env=None):
        log = open(self.tmp_path / f"node{rank}_{len(self.procs)}.log", "w")
        cmd = [self.launcher, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(self.port), *FAST, *flags, *command]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc.log_path = log.name
        self.procs.append(proc)
        return proc

    def wait(self, proc, timeout):
        proc.wait(timeout=timeout)
        return proc.returncode, Path(proc.log_path).read_text()

    def kill_all(self):
        for proc in self.procs:
            for pid in dist.workers_of(proc.pid):
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def nodes(launcher, tmp_path):
    n = Nodes(launcher, dist.free_port(), tmp_path)
    yield n
    n.kill_all()


def training(longtune, job, *overrides):
    return [longtune, "train", str(job), "--set", "train.micro_batch=1", *dist.sets(*overrides)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, longtune, data):
    """The uninterrupted run: 4 ranks (the same world size as two nodes of 2; Gloo is deterministic)."""
    tmp = tmp_path_factory.mktemp("reference")
    job = dist.job_file(tmp / "job.yaml", data, tmp / "run")
    dist.train(longtune, job, 4, "train.micro_batch=1")
    return tmp / "run", dist.weights(longtune, tmp / "run", tmp / "hf")


def assert_same_as_reference(longtune, run_dir, reference, out):
    ref_dir, ref_weights = reference
    assert dist.max_difference(dist.weights(longtune, run_dir, out), ref_weights) == 0.0
    assert [r["loss"] for r in dist.records(run_dir)] == [r["loss"] for r in dist.records(ref_dir)]


def test_stalled_worker_restarts_both_nodes_and_ends_in_the_same_weights(tmp_path, nodes, longtune, data, reference):
    run_dir = tmp_path / "run"
    job = dist.job_file(tmp_path / "job.yaml", data, run_dir)
    command = training(longtune, job, "parallel.collective_timeout_s=5")
    node0, node1 = (nodes.start(rank, ["--max-restarts", "2"], command) for rank in (0, 1))
    assert dist.wait_for_step(run_dir, 3, node1, deadline=240), Path(node1.log_path).read_text()
    stalled = dist.workers_of(node1.pid)[0]
    os.kill(stalled, signal.SIGSTOP)  # a stall, not a death: only the collective timeout reveals it
    (code0, out0), (code1, out1) = nodes.wait(node0, 300), nodes.wait(node1, 300)
    assert (code0, code1) == (0, 0), out0 + out1
    for out in (out0, out1):
        assert "failed in round 0; restarting" in out and "round 1: all 2 nodes joined" in out, out
    assert "collective timeout of 5 s" in Path(node1.log_path).read_text() + out0
    assert_same_as_reference(longtune, run_dir, reference, tmp_path / "hf")


def test_launcher_killed_and_started_again_rejoins_and_ends_in_the_same_weights(tmp_path, nodes, longtune, data,
                                                                                reference):
    run_dir = tmp_path / "run"
    job = dist.job_file(tmp_path / "job.yaml", data, run_dir)
    command = training(longtune, job, "parallel.collective_timeout_s=10")
    node0, node1 = (nodes.start(rank, ["--max-restarts", "2"], command) for rank in (0, 1))
    assert dist.wait_for_step(run_dir, 3, node1, deadline=240), Path(node1.log_path).read_text()
    node1.kill()  # SIGKILL: its workers get SIGTERM from the kernel (PDEATHSIG)
    node1.wait()
    again = nodes.start(1, ["--max-restarts", "2"], command)  # the same command
    (code0, out0), (code1, out1) = nodes.wait(node0, 300), nodes.wait(again, 300)
    assert (code0, code1) == (0, 0), out0 + out1
    assert "failed in round 0; restarting" in out0 and "round 1: all 2 nodes joined" in out1, out0 + out1
    assert "resumed from" in out0 + out1
    assert_same_as_reference(longtune, run_dir, reference, tmp_path / "hf")


SLEEPER = "import os, sys, time; time.sleep(float(os.environ.get('SLEEP', '60')))"


def test_node_that_never_comes_back_is_a_named_timeout(nodes):
    command = [sys.executable, "-c", SLEEPER]
    node0, node1 = (nodes.start(rank, ["--max-restarts", "3", "--rdzv-timeout", "4"], command) for rank in (0, 1))
    deadline = time.time() + 30
    while time.time() < deadline and "round 0: all 2 nodes joined" not in Path(node0.log_path).read_text():
        time.sleep(0.05)
    time.sleep(0.5)
    node1.kill()
    killed = time.time()
    code, out = nodes.wait(node0, 60)
    elapsed = time.time() - killed
    assert code == 1, out
    assert "node 1 sent no keep-alive" in out, out
    assert "RendezvousTimeoutError: round 1" in out and "node(s) 1 of 2 never joined" in out, out
    assert 4 <= elapsed < 4 + 2 + 10, elapsed  # keep-alive window (2 s) + stop + --rdzv-timeout 4 s


def test_node_that_never_starts_is_a_named_timeout(nodes):
    start = time.time()
    code, out = nodes.wait(nodes.start(0, ["--rdzv-timeout", "2"], [sys.executable, "-c", SLEEPER]), 30)
    assert code == 1 and "RendezvousTimeoutError: round 0" in out and "node(s) 1 of 2" in out, out
    assert 2 <= time.time() - start < 10


# Each attempt appends {"node", "round"} to $RECORD_DIR/<node>.jsonl; in round 0 it waits, later it exits 0.
RECORDER = r"""
import json, os, sys, time
with open(os.path.join(os.environ["RECORD_DIR"], os.environ["GROUP_RANK"] + ".jsonl"), "a") as f:
    f.write(json.dumps({"rank": int(os.environ["RANK"]), "round": int(os.environ["TORCHELASTIC_RESTART_COUNT"])}) + "\n")
if os.environ.get("FAIL_RANK") == os.environ["RANK"]:
    time.sleep(0.3); sys.exit(3)
if int(os.environ["TORCHELASTIC_RESTART_COUNT"]) == 0:
    time.sleep(60)
"""


def rounds(tmp_path, node):
    path = tmp_path / f"{node}.jsonl"
    return sorted(json.loads(line)["round"] for line in path.read_text().splitlines()) if path.exists() else []


def recorder_env(tmp_path, **extra):
    env = dict(os.environ, RECORD_DIR=str(tmp_path), **extra)
    return {k: v for k, v in env.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}


def two_recording_nodes_in_round_zero(tmp_path, nodes):
    """Starts two launchers (--max-restarts 2) of RECORDER workers and waits until all four workers run."""
    (tmp_path / "r.py").write_text(RECORDER)
    env = recorder_env(tmp_path)
    command = [sys.executable, str(tmp_path / "r.py")]
    node0, node1 = (nodes.start(rank, ["--max-restarts", "2"], command, env) for rank in (0, 1))
    deadline = time.time() + 30
    while time.time() < deadline and (len(rounds(tmp_path, 0)) < 2 or len(rounds(tmp_path, 1)) < 2):
        time.sleep(0.05)
    return node0, node1, command, env


def test_node_zero_restarted_starts_a_fresh_store_that_the_others_rejoin(tmp_path, nodes):
    node0, node1, command, env = two_recording_nodes_in_round_zero(tmp_path, nodes)
    node0.kill()  # the store goes with it
    node0.wait()
    again = nodes.start(0, ["--max-restarts", "2"], command, env)
    (code0, out0), (code1, out1) = nodes.wait(again, 60), nodes.wait(node1, 60)
    assert (code0, code1) == (0, 0), out0 + out1
    assert "RendezvousConnectionError" in out1, out1
    # Node 1 carried its count into the fresh store: both nodes ran round 1 (not round 0 again).
    assert rounds(tmp_path, 1) == [0, 0, 1, 1] and rounds(tmp_path, 0) == [0, 0, 1, 1]


def test_max_restarts_counts_rounds_of_the_whole_job(tmp_path, nodes):
    (tmp_path / "r.py").write_text(RECORDER)
    env = recorder_env(tmp_path, FAIL_RANK="3")  # node 1's second worker fails in every round
    command = [sys.executable, str(tmp_path / "r.py")]
    node0, node1 = (nodes.start(rank, ["--max-restarts", "1"], command, env) for rank in (0, 1))
    (code0, out0), (code1, out1) = nodes.wait(node0, 60), nodes.wait(node1, 60)
    assert (code0, code1) == (1, 1), out0 + out1
    assert rounds(tmp_path, 0) == [0, 0, 1, 1] and rounds(tmp_path, 1) == [0, 0, 1, 1]
    assert "Root Cause (first observed failure)" in out1 and "exitcode  : 3" in out1, out1
    assert "Root Cause (reported through the rendezvous)" in out0 and "worker rank 3" in out0, out0


def test_workers_use_the_launchers_store_as_torchruns_agent_store(tmp_path, launcher):
    worker = tmp_path / "s.py"
    worker.write_text(
        "import os\nfrom datetime import timedelta\nfrom torch.distributed import TCPStore\n"
        "assert os.environ['TORCHELASTIC_USE_AGENT_STORE'] == 'True'\n"
        "s = TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), is_master=False,"
        " timeout=timedelta(seconds=20))\n"
        "s.set('w' + os.environ['RANK'], 'x')\n"
        "s.wait(['w0', 'w1'])\nprint('both ranks met in the agent store', flush=True)\n")
    r = subprocess.run([launcher, "--standalone", "--nproc-per-node", "2", "--tee", "1", sys.executable, str(worker)],
                       capture_output=True, text=True, timeout=120, env=recorder_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("both ranks met in the agent store") == 2


def test_a_signal_to_one_launcher_stops_every_node(tmp_path, nodes):
    node0, node1, _, _ = two_recording_nodes_in_round_zero(tmp_path, nodes)
    node1.send_signal(signal.SIGTERM)  # e.g. the scheduler preempts one node
    (code0, out0), (code1, out1) = nodes.wait(node0, 60), nodes.wait(node1, 60)
    # Both end as a SIGTERM'd launcher does (the sleeping workers die of it: 128 + 15), no restart.
    assert (code0, code1) == (128 + signal.SIGTERM,) * 2, out0 + out1
    assert "round 0 ended: the rendezvous was closed: node 1 received signal 15" in out0, out0
    assert rounds(tmp_path, 0) == [0, 0] and rounds(tmp_path, 1) == [0, 0]
