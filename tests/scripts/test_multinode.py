"""scripts/multinode.py: two network namespaces as two nodes (as root), removed whatever happens, and the whole
check (torchrun across them, one-node comparison, a killed worker restarted) in a short version."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "multinode.py"
_spec = importlib.util.spec_from_file_location("multinode_script", SCRIPT)
multinode = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = multinode  # dataclasses look their module up
_spec.loader.exec_module(multinode)

REASON = multinode.unavailable_reason()
needs_namespaces = pytest.mark.skipif(REASON is not None, reason=f"scripts/multinode.py {REASON}")

# Node 0 listens on its veth address; node 1 connects over the pair and reads what node 0 sent.
SERVER = (
    "import socket; s = socket.create_server(('{address}', 29399)); print('up', flush=True); "
    "c, _ = s.accept(); c.sendall(b'hello from node 0'); c.close()"
)
CLIENT = "import socket; print(socket.create_connection(('{address}', 29399), timeout=10).recv(100).decode())"


def _in(namespace: str, code: str, **kwargs) -> list[str]:
    return ["ip", "netns", "exec", namespace, sys.executable, "-c", code.format(**kwargs)]


@needs_namespaces
def test_two_namespaces_talk_over_their_veth_pair_and_are_removed_afterwards() -> None:
    with multinode.namespaces() as names:
        assert all(multinode.namespace_exists(name) for name in names) and names[0] != names[1]
        server = subprocess.Popen(_in(names[0], SERVER, address=multinode.ADDRESSES[0]), stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        try:
            assert server.stdout.readline().strip() == "up"
            client = subprocess.run(_in(names[1], CLIENT, address=multinode.ADDRESSES[0]), capture_output=True,
                                    text=True, timeout=30)  # fmt: skip
            assert client.stdout.strip() == "hello from node 0", client.stderr
        finally:
            server.kill()
            server.wait()
        # The veth ends live only inside the namespaces, not in the host's.
        host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert not any(f" {device}@" in host_links or f" {device}:" in host_links for device in multinode.DEVICES)
    assert not any(multinode.namespace_exists(name) for name in names)


@needs_namespaces
def test_namespaces_are_removed_when_the_run_fails_and_stale_ones_of_dead_runs_are_cleared() -> None:
    with pytest.raises(RuntimeError, match="the run broke"), multinode.namespaces() as names:
        raise RuntimeError("the run broke")
    assert not any(multinode.namespace_exists(name) for name in names)

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: what a run killed with -9 leaves behind
    stale = f"{multinode.PREFIX}-{gone.pid}-abc123-0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in multinode.remove_stale_namespaces()
        assert not multinode.namespace_exists(stale)
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


@needs_namespaces
@pytest.mark.slow
def test_two_nodes_equal_one_and_a_killed_worker_is_restarted_to_the_same_weights(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, str(SCRIPT), "--steps", "6", "--save-every", "2", "--kill-at", "3", "--json", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        process.terminate()  # the script stops its nodes and removes its namespaces on SIGTERM
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"scripts/multinode.py timed out\n{stderr[-4000:]}")
    assert process.returncode == 0, f"{stdout[-3000:]}\n{stderr[-6000:]}"
    figures = json.loads(out.read_text())
    assert figures["passed"] and stdout.strip().endswith("PASS")
    assert figures["two_vs_one_node_max_abs_diff"] == 0.0 and figures["tensors"] > 100
    assert figures["kill_seen_by_torchrun"] and 2 <= figures["resumed_from_step"] <= figures["killed_at_step"]
    assert figures["restarted_vs_uninterrupted_max_abs_diff"] == 0.0
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{multinode.PREFIX}-{process.pid}-" not in listing  # its namespaces are gone


@needs_namespaces
def test_sigterm_mid_run_stops_every_process_and_removes_the_namespaces() -> None:
    process = subprocess.Popen([sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, workers = time.monotonic() + 300, []
        while time.monotonic() < deadline and not workers:  # until both nodes' workers train
            time.sleep(0.5)
            assert process.poll() is None, process.communicate()[1][-3000:]
            table = multinode.processes()
            workers = [pid for pid in multinode.descendants(process.pid) if b"train" in table.get(pid, (0, []))[1]]
            workers = workers if len(workers) >= 2 else []
        assert workers, "no workers started"
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # none left running, orphaned or not
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{multinode.PREFIX}-{process.pid}-" not in listing


def test_the_arguments_must_put_a_checkpoint_before_the_kill() -> None:
    with pytest.raises(SystemExit):
        multinode.parse_args(["--steps", "6", "--save-every", "4", "--kill-at", "3"])
