"""Two training nodes on one machine: torchrun across two network namespaces, checked against one node, then an
elastic restart after a worker is killed. Run as root (it creates network namespaces)::

    python scripts/multinode.py [--steps 12] [--save-every 4] [--kill-at 6] [--json OUT] [--keep DIR]

What it does, in a scratch folder of its own (``--keep DIR`` keeps it there):

1. two network namespaces joined by a veth pair, ``198.18.0.1/24`` and ``198.18.0.2/24`` (the range set aside for
   network benchmarks; the addresses exist only inside the two namespaces, nothing reaches outside the machine),
   loopback up in each; their names carry this process's id, so two runs never collide, and they are removed
   at the end whatever happens (error, Ctrl-C, SIGTERM; a run killed with -9 leaves them for the next run to
   remove);
2. synthetic caption shards and a tiny GroupViT config (fp32, drop path and Gumbel noise on, a checkpoint every
   ``--save-every`` steps);
3. ``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 198.18.0.1:29400`` in each
   namespace (gloo over the veth: ``GLOO_SOCKET_IFNAME``, ``--local-addr``), training with ``--auto-resume``;
4. the same global batch trained by 2 processes on one node (torchrun ``--nproc-per-node 2`` inside the first
   namespace, over its loopback), and the largest absolute difference between the two runs' final weights;
5. the two-node run again, with node 1's worker killed (SIGKILL) once the log passes ``--kill-at`` (after the
   checkpoint at ``--save-every``): torchrun (``--max-restarts``) restarts both nodes' workers with the same
   command, ``--auto-resume`` continues from the last checkpoint, and the final weights are compared with the
   uninterrupted two-node run's.

It prints the figures and PASS, or FAIL and exits 1 when a difference exceeds ``--tolerance`` (default 0: the
runs are expected to agree bit for bit) or the restart did not happen; ``--json OUT`` writes them. Exit 2 when
the machine cannot run it (not root, no ``ip``, no network namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from annofree.data.synth import SceneConfig, write_scenes
from annofree.engine.logging import read_log
from annofree.weights import read_weights

PREFIX = "annofree-mn"  # namespace names: PREFIX-<pid>-<random>-<node>
ADDRESSES = ("198.18.0.1", "198.18.0.2")  # node 0 hosts the rendezvous
DEVICES = ("mn0", "mn1")  # the veth ends, one in each namespace
RDZV_PORT = 29400  # each namespace has ports of its own: no clash with the host or another run
SAMPLES, PER_SHARD, BATCH = 64, 16, 8  # 4 shards: 2 per node; 4 batches of 8 per rank and epoch
# The tests' tiny GroupViT (32 px, 8 then 4 groups), with drop path so that the forward draws random numbers.
MODEL = {
    "image": {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depths": [1, 1, 1], "num_heads": [2, 2, 2],
              "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4], "drop_path_rate": 0.1},
    "text": {"context_length": 16, "width": 32, "layers": 1, "heads": 2},
    "embed_dim": 16,
    "proj_hidden_dim": 32,
}  # fmt: skip


class Unavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no ``ip``, no permission)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    if not Path("/run/netns").exists() and not os.access("/run", os.W_OK):
        return "cannot create /run/netns"
    return None


def remove_stale_namespaces() -> list[str]:
    """Remove the namespaces of earlier runs whose process is gone (a run killed with -9 cannot clean up)."""
    removed = []
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^({PREFIX}-(\d+)-\w+-\d)\b", listing, flags=re.MULTILINE):
        if not Path(f"/proc/{name[1]}").exists():
            subprocess.run(["ip", "netns", "del", name[0]], capture_output=True)
            removed.append(name[0])
    return removed


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair, addressed and up; removed on the way out, however it goes."""
    tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
    names = (f"{tag}-0", f"{tag}-1")
    made: list[str] = []
    try:
        for name in names:
            _ip("netns", "add", name)
            made.append(name)
        # The pair is made inside the namespaces directly: nothing ever appears in the host's namespace.
        _ip("link", "add", DEVICES[0], "netns", names[0], "type", "veth", "peer", "name", DEVICES[1], "netns", names[1])
        for name, device, address in zip(names, DEVICES, ADDRESSES, strict=True):
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", device)
            _ip("-n", name, "link", "set", device, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield names
    except RuntimeError as error:
        if len(made) < 2:
            raise Unavailable(str(error)) from None
        raise
    finally:
        for name in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def namespace_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


@dataclass
class Node:
    """One torchrun process (an agent and its workers), started in its own session so that it can be stopped."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Launcher:
    """Starts torchrun in a namespace and stops everything it started when the run ends."""

    work: Path
    nodes: list[Node] = field(default_factory=list)

    def torchrun(self, name: str, namespace: str, args: list[str], env: dict[str, str]) -> Node:
        command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "torch.distributed.run", *args]
        log = self.work / f"{name}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
            )
        node = Node(name, process, log)
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                for pid in [node.process.pid, *descendants(node.process.pid)]:  # the agent, its workers, theirs
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                node.process.wait()


def write_inputs(work: Path, steps: int, save_every: int) -> tuple[Path, str]:
    """Synthetic caption shards and the run's config -> (config file, shard pattern)."""
    data = write_scenes(
        work / "data", train=SAMPLES, val=0, cfg=SceneConfig(size=32), samples_per_shard=PER_SHARD, workers=1,
        progress=False,
    )  # fmt: skip
    config = {
        "seed": 7,
        "method": "groupvit",
        "model": MODEL,
        "data": {"image_size": 32, "num_prompts": 2, "shuffle_buffer": 16},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "clip_grad": 5.0},
        "train": {"steps": steps, "batch_size": BATCH, "num_workers": 0, "save_every": save_every, "log_every": 1,
                  "tensorboard": False, "device": "cpu", "precision": "fp32"},
    }  # fmt: skip
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, data.train_pattern


def train_args(config: Path, data: str, out: Path) -> list[str]:
    return ["-m", "annofree", "train", "groupvit", "--config", str(config), "--data", data, "--out", str(out),
            "--auto-resume"]  # fmt: skip


def two_node_env(node: int) -> dict[str, str]:
    return {
        "GLOO_SOCKET_IFNAME": DEVICES[node],  # gloo binds the veth end, not whatever the host name resolves to
        "OMP_NUM_THREADS": "1",
        # A fresh rendezvous store per attempt: on torchrun's shared one a restarted gloo group read the
        # previous attempt's keys (annofree.engine.distributed.launch_warnings).
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }


def start_two_nodes(
    launcher: Launcher, names: tuple[str, str], run: str, train: list[str], restarts: int
) -> list[Node]:
    nodes = []
    for node, namespace in enumerate(names):
        args = [
            "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{ADDRESSES[0]}:{RDZV_PORT}", "--rdzv-id", run, "--local-addr", ADDRESSES[node],
            # torchrun guesses whether it hosts the rendezvous from the host name, which both namespaces share
            "--rdzv-conf", f"is_host={str(node == 0).lower()}",
            "--max-restarts", str(restarts), "--monitor-interval", "0.2", *train,
        ]  # fmt: skip
        nodes.append(launcher.torchrun(f"{run}-node{node}", namespace, args, two_node_env(node)))
    return nodes


def wait(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        try:
            node.process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{node.name} did not finish in {timeout:.0f} s\n{node.tail()}") from None
        if node.process.returncode != 0:
            raise RuntimeError(f"{node.name} exited with {node.process.returncode}\n{node.tail()}")


def processes() -> dict[int, tuple[int, list[bytes]]]:
    """Every process: pid -> (parent pid, command line)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def descendants(pid: int) -> list[int]:
    """The processes under ``pid``, children first (torchrun starts its workers in sessions of their own)."""
    table, found, frontier = processes(), [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (ppid, _) in table.items() if ppid == parent]
        found += children
        frontier += children
    return found


def worker_of(agent_pid: int) -> int | None:
    """The training worker that a torchrun agent started: its direct child running ``annofree``."""
    for pid, (parent, cmdline) in processes().items():
        if parent == agent_pid and b"annofree" in cmdline:
            return pid
    return None


def logged_steps(out: Path) -> list[int]:
    log = out / "log.jsonl"
    if not log.exists():
        return []
    with contextlib.suppress(ValueError, OSError):  # a line being written
        return [record["step"] for record in read_log(log)]
    return []


def kill_when_past(node: Node, out: Path, step: int, others: list[Node], timeout: float) -> int:
    """SIGKILL ``node``'s worker once the run has logged ``step``; returns the step logged last before the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = logged_steps(out)
        if steps and steps[-1] >= step:
            worker = worker_of(node.process.pid)
            if worker is None:
                raise RuntimeError(f"no worker under {node.name} (pid {node.process.pid}) to kill")
            os.kill(worker, signal.SIGKILL)
            return steps[-1]
        for each in others:
            if each.process.poll() is not None:
                raise RuntimeError(f"{each.name} ended before the kill ({each.process.returncode})\n{each.tail()}")
        time.sleep(0.02)
    raise RuntimeError(f"the run did not reach step {step} in {timeout:.0f} s")


def max_difference(a: Path, b: Path) -> tuple[float, int]:
    """The largest absolute difference between two runs' final weights, and the number of tensors compared."""
    first, _, _ = read_weights(a)
    second, _, _ = read_weights(b)
    if first.keys() != second.keys():
        raise RuntimeError(f"{a} and {b} hold different tensors")
    worst = max((first[k].double() - second[k].double()).abs().max().item() for k in first)
    return worst, len(first)


@dataclass
class Figures:
    steps: int
    global_batch: int
    save_every: int
    two_nodes_s: float = 0.0
    one_node_s: float = 0.0
    two_vs_one_node_max_abs_diff: float = float("nan")
    tensors: int = 0
    killed_at_step: int = 0
    kill_seen_by_torchrun: bool = False
    resumed_from_step: int = 0
    restart_s: float = 0.0
    restarted_vs_uninterrupted_max_abs_diff: float = float("nan")
    machine: dict[str, str] = field(default_factory=dict)


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return {"cpu": model or platform.processor(), "cores": str(os.cpu_count()), "torch": torch.__version__,
            "python": platform.python_version()}  # fmt: skip


def run(work: Path, steps: int, save_every: int, kill_at: int, restarts: int, timeout: float) -> Figures:
    figures = Figures(steps=steps, global_batch=2 * BATCH, save_every=save_every, machine=machine())
    config, data = write_inputs(work, steps, save_every)
    launcher = Launcher(work)
    with namespaces() as names:
        try:
            started = time.perf_counter()
            wait(start_two_nodes(launcher, names, "two-nodes", train_args(config, data, work / "two_nodes"), restarts),
                 timeout)  # fmt: skip
            figures.two_nodes_s = time.perf_counter() - started

            started = time.perf_counter()
            one_node = [
                "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{RDZV_PORT + 1}", *train_args(config, data, work / "one_node"),
            ]  # fmt: skip
            env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
            wait([launcher.torchrun("one-node", names[0], one_node, env)], timeout)
            figures.one_node_s = time.perf_counter() - started
            figures.two_vs_one_node_max_abs_diff, figures.tensors = max_difference(
                work / "two_nodes", work / "one_node"
            )

            started = time.perf_counter()
            out = work / "restarted"
            nodes = start_two_nodes(launcher, names, "restarted", train_args(config, data, out), restarts)
            figures.killed_at_step = kill_when_past(nodes[1], out, kill_at, nodes, timeout)
            wait(nodes, timeout)
            figures.restart_s = time.perf_counter() - started
            logs = "".join(node.tail(10**7) for node in nodes)
            figures.kill_seen_by_torchrun = "exitcode: -9" in logs  # torchrun's line for the SIGKILLed worker
            resumed = re.findall(r"resuming from step (\d+)", logs)
            figures.resumed_from_step = int(resumed[-1]) if resumed else 0
            figures.restarted_vs_uninterrupted_max_abs_diff, _ = max_difference(work / "two_nodes", out)
        finally:
            launcher.stop_all()
    return figures


def failures(figures: Figures, tolerance: float) -> list[str]:
    problems = []
    if not figures.kill_seen_by_torchrun:
        problems.append("torchrun did not report the killed worker")
    if not figures.two_vs_one_node_max_abs_diff <= tolerance:
        problems.append(f"two nodes vs one node: {figures.two_vs_one_node_max_abs_diff:.3g} > {tolerance:g}")
    if not figures.resumed_from_step:
        problems.append("the killed run did not resume from a checkpoint")
    elif figures.resumed_from_step > figures.killed_at_step:
        problems.append(f"resumed from step {figures.resumed_from_step}, after the kill at {figures.killed_at_step}")
    if not figures.restarted_vs_uninterrupted_max_abs_diff <= tolerance:
        problems.append(
            f"restarted vs uninterrupted: {figures.restarted_vs_uninterrupted_max_abs_diff:.3g} > {tolerance:g}"
        )
    return problems


def summary(figures: Figures) -> str:
    f = figures
    return "\n".join([
        f"multinode: 2 network namespaces ({ADDRESSES[0]}, {ADDRESSES[1]} on a veth pair), torchrun --nnodes 2 "
        f"--nproc-per-node 1, c10d rendezvous, gloo; tiny GroupViT, {f.steps} steps of global batch "
        f"{f.global_batch}, fp32; {f.machine['cpu']}, {f.machine['cores']} cores, torch {f.machine['torch']}",
        f"  two nodes vs 2 processes on one node: max |weight difference| = {f.two_vs_one_node_max_abs_diff:.3g} "
        f"over {f.tensors} tensors (two nodes {f.two_nodes_s:.1f} s, one node {f.one_node_s:.1f} s)",
        f"  node 1's worker killed after step {f.killed_at_step} (checkpoints every {f.save_every} steps): "
        f"torchrun restarted both nodes, resumed from step {f.resumed_from_step}; max |weight difference| against "
        f"the uninterrupted run = {f.restarted_vs_uninterrupted_max_abs_diff:.3g} ({f.restart_s:.1f} s)",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="optimiser steps of each run (default 12)")
    parser.add_argument("--save-every", type=int, default=4, help="checkpoint every N steps (default 4)")
    parser.add_argument("--kill-at", type=int, default=6, help="kill node 1's worker once this step is logged")
    parser.add_argument("--max-restarts", type=int, default=2, help="torchrun --max-restarts (default 2)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest weight difference that passes")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each run may take (default 300)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not 0 < args.save_every < args.kill_at < args.steps:
        parser.error("need 0 < --save-every < --kill-at < --steps (a checkpoint before the kill, steps after it)")
    return args


def _stop_on(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: workers stopped, namespaces removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"multinode: cannot run here: {reason}", file=sys.stderr)
        return 2
    previous = {signum: signal.signal(signum, _stop_on) for signum in (signal.SIGTERM, signal.SIGHUP)}
    remove_stale_namespaces()
    work = args.keep or Path(tempfile.mkdtemp(prefix="annofree-multinode-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = run(work.resolve(), args.steps, args.save_every, args.kill_at, args.max_restarts, args.timeout)
    except Unavailable as error:
        print(f"multinode: cannot run here: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"multinode: FAIL: {error}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(summary(figures))
    problems = failures(figures, args.tolerance)
    if args.json:
        args.json.write_text(json.dumps({**asdict(figures), "passed": not problems}, indent=2) + "\n")
    print("FAIL: " + "; ".join(problems) if problems else "PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
