"""`ray up` for real, on this machine: cluster-onprem.yaml rendered for a head at 127.0.0.1 and a
worker at 127.0.0.2, then docs/cluster.md's own command lines (up, dashboard, job submit,
rsync-down, down) with a `batch_epoch --smoke` job whose runs and cache are in an S3 bucket
(moto's server). Its numbers must equal a local run's.

Each node is an sshd in its own PID namespace (`unshare --pid --fork --mount-proc`) with its own
home: every command Ray's launcher runs over SSH on that address runs inside that node, so the
`ray stop` it runs touches only that node's Ray, not other Ray instances on the machine. The
nodes' ~/.bashrc names this test's Python as RAYGENRE_PYTHON (the on-prem path of
cluster-setup.sh: the pinned dependencies are already there, only raygenre is installed).

Slow: `pytest -m slow`. Most of its time is `ray up` (the nodes' setup), the worker's start
(the head's autoscaler begins it once the head is up) and the job. Needs root (sshd on port 22
of two loopback addresses), unshare, sshd and rsync (.ci/run installs them).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests import s3server

from .conftest import history_by_config
from .test_grid_e2e import assert_every_row_equal

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HEAD, WORKER = "127.0.0.1", "127.0.0.2"
# The block of docs/cluster.md that this test runs, line by line.
MARKER = "<!-- tests/test_launcher.py runs this block -->"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: an sshd on port 22 of 127.0.0.1 and 127.0.0.2 (CI runs as root)"
    for tool in ("unshare", "rsync", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            return f"needs {tool} (.ci/run installs openssh-server and rsync)"
    if not Path("/usr/sbin/sshd").exists():
        return "needs /usr/sbin/sshd (.ci/run installs openssh-server)"
    return None


def doc_commands(text: str) -> list[str]:
    """The shell commands of the fenced block after MARKER: continuations joined, comments off."""
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return _commands(block)


def _commands(block: str) -> list[str]:
    out, cur = [], ""
    for line in block.splitlines():
        line = re.sub(r"\s+# .*$", "", line).rstrip()
        if line.endswith("\\"):
            cur += line[:-1].strip() + " "
            continue
        cur += line.strip()
        if cur:
            out.append(cur)
        cur = ""
    return out


def readme_cluster_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## On a cluster", 1)[1].split("\n## ", 1)[0]
    return _commands(section.split("```bash\n", 1)[1].split("```", 1)[0])


def _free_port() -> int:
    # Outside Ray's worker port range (10002-19999): the kernel's ephemeral ports are.
    while (port := s3server.free_port()) <= 19999:
        pass
    return port


def _wait_port(ip: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError as e:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nothing listens on {ip}:{port}: "
                                   f"{log.read_text()[-2000:]}") from e
            time.sleep(0.2)


class Node:
    """An sshd on `ip`:22 in its own PID and mount namespaces, where root's home (in a private
    /etc/passwd) is the node's own: sshd, bash and ssh's `~` (the head's autoscaler passes
    `-i ~/ray_bootstrap_key.pem`) all resolve it there, and the host's /root is untouched."""

    def __init__(self, ip: str, key: Path, bashrc: str) -> None:
        # A short path: Ray's session sockets live under RAY_TMPDIR (unix socket path limit).
        self.dir = Path(tempfile.mkdtemp(prefix="rgl", dir="/tmp"))
        self.home = self.dir / "h"
        self.home.mkdir()
        (self.home / ".bashrc").write_text(bashrc + f"export RAY_TMPDIR={self.dir}/t\n")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.dir / "hostkey")], check=True)
        shutil.copy(f"{key}.pub", self.dir / "authorized_keys")
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {ip}:22",
            f"HostKey {self.dir}/hostkey",
            f"AuthorizedKeysFile {self.dir}/authorized_keys",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no",
            "StrictModes no",  # the key files lie under /tmp (mode 1777)
            "PidFile none", "MaxStartups 100",
            ""]))
        passwd = self.dir / "passwd"
        passwd.write_text("".join(
            ":".join(f[:5] + [str(self.home)] + f[6:]) + "\n" if f[0] == "root" else line
            for line in Path("/etc/passwd").read_text().splitlines(keepends=True)
            for f in [line.rstrip("\n").split(":")]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.log = self.dir / "sshd.log"
        # sshd is the namespace's init: killing it ends every process of the node.
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
             f"mount --bind {passwd} /etc/passwd && exec /usr/sbin/sshd -D -e -f {config}"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        _wait_port(ip, 22, self.proc, self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def render(config: dict, key: Path, name: str, ports: dict[str, int]) -> dict:
    """cluster-onprem.yaml for this machine: addresses, user, key, and ports no other Ray here
    uses (the nodes share the machine's network). Commands gain flags; none loses any."""
    config = copy.deepcopy(config)
    config["cluster_name"] = name
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(key)}
    config["min_workers"] = config["max_workers"] = 1
    gcs = ports["gcs"]
    config["head_start_ray_commands"] = [
        c.replace("--port=6379", f"--port={gcs}") + (
            f" --dashboard-port={ports['dashboard']}"
            f" --dashboard-agent-listen-port={ports['head_agent']}"
            f" --ray-client-server-port={ports['client']}" if "ray start" in c else "")
        for c in config["head_start_ray_commands"]]
    # Both nodes have this machine's address; the worker keeps its own for Ray to tell them apart.
    config["worker_start_ray_commands"] = [
        c.replace(":6379", f":{gcs}") + (
            f" --node-ip-address={WORKER}"
            f" --dashboard-agent-listen-port={ports['worker_agent']}" if "ray start" in c else "")
        for c in config["worker_start_ray_commands"]]
    return config


def _processes(marks: list[str]) -> dict[int, str]:
    """This test's processes still alive: every command line naming a node's folder or the
    test's SSH key (the launcher's SSH control masters on this side)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmd for m in marks):
            found[int(pid)] = cmd
    return found


def _run(cmd: str, env: dict, cwd: Path, log: Path, timeout: int) -> subprocess.CompletedProcess:
    with open(log, "a") as f:
        f.write(f"\n$ {cmd}\n")
    start = time.time()
    proc = subprocess.run(["bash", "-c", cmd], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    with open(log, "a") as f:
        f.write(proc.stdout + proc.stderr)
    print(f"[launcher] {time.time() - start:.0f} s: {cmd[:70]}")  # shown with -s or on failure
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_ray_up_job_submit_down(s3, smoke_run: dict, tmp_path: Path) -> None:
    if why := _missing():
        pytest.skip(why)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    bucket = s3.bucket()
    # What a node's own shell provides: the Python with the pins, and (here only) the S3
    # server's address and keys, which every Ray process on the node inherits.
    bashrc = f"export RAYGENRE_PYTHON={sys.executable}\n" + "".join(
        f"export {k}={v}\n" for k, v in s3.env.items())
    name = f"rg-launcher-{os.getpid()}"
    ports = {p: _free_port() for p in ("gcs", "dashboard", "head_agent", "worker_agent",
                                       "client", "local_dashboard")}
    cfg = tmp_path / "cluster.yaml"
    config = render(yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text()), key, name,
                    ports)
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks first
    cfg.write_text(yaml.safe_dump(config))

    client = tmp_path / "client"  # the laptop: its own home, so its own Ray token
    client.mkdir()
    env = s3server.with_env(s3, {
        **os.environ, "HOME": str(client), "BUCKET": bucket,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    log = tmp_path / "commands.log"
    nodes: list[Node] = []
    dashboard = None
    try:
        nodes = [Node(HEAD, key, bashrc), Node(WORKER, key, bashrc)]
        # The project is rsynced from the checkout's root, as from a user's clone.
        cwd = ROOT
        for cmd in doc_commands((ROOT / "docs" / "cluster.md").read_text()):
            cmd = (cmd.replace(" cluster.yaml", f" {cfg}")
                   .replace("http://127.0.0.1:8265", f"http://127.0.0.1:{ports['local_dashboard']}")
                   .replace(" batch_epoch ", " batch_epoch --smoke ")
                   .replace(" results/", f" {tmp_path}/results/"))
            if cmd.startswith("ray dashboard "):
                cmd += f" --port {ports['local_dashboard']} --remote-port {ports['dashboard']}"
                dashboard = subprocess.Popen(["bash", "-c", cmd], env=env, cwd=cwd,
                                             stdout=open(tmp_path / "dashboard.log", "w"),
                                             stderr=subprocess.STDOUT, start_new_session=True)
                _wait_port("127.0.0.1", ports["local_dashboard"], dashboard,
                           tmp_path / "dashboard.log", timeout=60)
                continue
            if cmd.startswith("ray down"):
                _check_results(tmp_path, smoke_run, s3, bucket)
            if "ray job submit" in cmd:
                start = time.time()
                _wait_for_worker(ports["gcs"], env)
                print(f"[launcher] {time.time() - start:.0f} s: waiting for the worker")
            proc = _run(cmd, env, cwd, log, timeout=900)
            if "ray job submit" in cmd:
                assert "succeeded" in proc.stdout + proc.stderr, proc.stdout[-3000:]
                _check_refused_without_token(cmd, env, tmp_path)
        assert (tmp_path / "results").exists(), "no `ray rsync-down` line was run"
    finally:
        if dashboard is not None and dashboard.poll() is None:
            os.killpg(dashboard.pid, signal.SIGKILL)
            dashboard.wait(timeout=30)
        for node in nodes:
            node.kill()
        # The kernel ends a namespace's processes with its init, and SSH control masters end
        # with their connection: give both a moment, then kill whatever is left (a leak).
        marks = [str(key)] + [str(n.dir) for n in nodes]
        deadline = time.time() + 30
        while (left := _processes(marks)) and time.time() < deadline:
            time.sleep(0.5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
        Path(f"/tmp/cluster-{name}.state").unlink(missing_ok=True)
        # `ray up` caches the config it launched in /tmp/ray-config-<hash>.
        for cached in Path("/tmp").glob("ray-config-*"):
            if name in cached.read_text(errors="replace"):
                cached.unlink()
    assert not left, left


def _check_refused_without_token(submit: str, env: dict, tmp_path: Path) -> None:
    """Token authentication is on: a client without the token cannot list the jobs."""
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    address = submit.split("--address ", 1)[1].split()[0]
    proc = subprocess.run(["ray", "job", "list", "--address", address],
                          env={**env, "HOME": str(stranger)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "auth" in (proc.stdout + proc.stderr).lower(), proc.stderr[-2000:]


def _wait_for_worker(gcs_port: int, env: dict, timeout: float = 300) -> None:
    """Until the head's autoscaler has started Ray on the worker (~1 min after `ray up`)."""
    script = (
        "import ray, sys, time\n"
        f"ray.init(address='{HEAD}:{gcs_port}', logging_level='ERROR')\n"
        f"end = time.time() + {timeout}\n"
        "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.time() < end: time.sleep(2)\n"
        "sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= 2 else 1)\n")
    proc = subprocess.run([sys.executable, "-c", script], env={**env, "RAY_AUTH_MODE": "token"},
                          capture_output=True, text=True, timeout=timeout + 120)
    assert proc.returncode == 0, f"the worker never joined: {proc.stderr[-3000:]}"


def _check_results(tmp_path: Path, smoke_run: dict, s3, bucket: str) -> None:
    got = history_by_config(tmp_path / "results" / "batch_epoch-smoke" / "history.csv")
    assert_every_row_equal(got, history_by_config(smoke_run["out"] / "history.csv"))
    keys = s3.keys(bucket)
    # The run's checkpoints and the prepared data went to the bucket, not a node's disk.
    assert any(k.startswith("raygenre/runs/batch_epoch-smoke/") and "checkpoint_" in k
               for k in keys), keys[:20]
    assert any(k.startswith("raygenre/cache/") for k in keys), keys[:20]
