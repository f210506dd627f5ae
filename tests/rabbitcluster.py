"""A three-node RabbitMQ cluster on this machine, for the fault tests.

Each node (``duct-a@localhost`` ...) has its own AMQP and distribution
ports and its own data directory under tmp; all share one epmd port and
one Erlang cookie (a common ``HOME``).  `Cluster.kill` SIGKILLs a node's
Erlang VM (its pid file names it) and `Cluster.revive` starts it again on
the same data, where it rejoins the cluster by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from localservers import freePort
from rabbitserver import BIN


@dataclass
class Node:
    name: str
    root: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def pidFile(self) -> Path:
        return self.root / "pid"

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout: float = 120) -> str:
        argv = [str(BIN / tool), "-n", self.name, *args]
        done = subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        return done.stdout

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the node's for its life
        self.process = subprocess.Popen([str(BIN / "rabbitmq-server")], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.root)  # fmt: skip

    def wait(self) -> None:
        self.ctl("wait", "--timeout", "120", str(self.pidFile))

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to its peers or clients."""
        pid = int(self.pidFile.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pidFile.unlink(missing_ok=True)


@dataclass
class Cluster:
    home: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def ctl(self, *args: str, tool: str = "rabbitmqctl") -> str:
        """``rabbitmqctl args`` on the first node alive."""
        return self.alive()[0].ctl(*args, tool=tool)

    def leader(self, queue: str) -> str:
        """The node that leads ``queue`` (a quorum queue's leader, a classic queue's home)."""
        out = self.ctl("-q", "list_queues", "name", "leader", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return parts[1]
        out = self.ctl("-q", "list_queues", "name", "pid", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return parts[1].strip("<>").split(".")[0]
        raise AssertionError(f"no queue {queue}: {out}")

    def messages(self, queue: str) -> int | None:
        """Messages in ``queue``, ready and unacked; None if it is not there."""
        out = self.ctl("-q", "list_queues", "name", "messages", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue and parts[1].isdigit():
                return int(parts[1])
        return None

    def kill(self, name: str) -> None:
        self.node(name).kill()

    def revive(self, name: str) -> None:
        node = self.node(name)
        node.start()
        node.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                try:
                    node.kill()
                except (OSError, ValueError):
                    node.process.kill()
        subprocess.run(["epmd", "-kill"], env=self.nodes[0].env, capture_output=True,
                       check=False)  # fmt: skip
        shutil.rmtree(self.home, ignore_errors=True)


def startCluster(names: tuple[str, ...] = ("duct-a", "duct-b", "duct-c")) -> Cluster:
    home = Path(tempfile.mkdtemp(prefix="duct-rabbit-cluster-"))
    cookie = home / ".erlang.cookie"
    cookie.write_text("DUCTCLUSTERTESTCOOKIE")
    cookie.chmod(0o400)
    epmd = str(freePort())
    cluster = Cluster(home)
    for short in names:
        root = home / short
        root.mkdir()
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text("loopback_users = none\n")
        port = freePort()
        env = {**os.environ, "HOME": str(home), "RABBITMQ_NODENAME": f"{short}@localhost",
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
               "RABBITMQ_DIST_PORT": str(freePort()), "ERL_EPMD_PORT": epmd,
               "RABBITMQ_MNESIA_BASE": str(root / "mnesia"), "RABBITMQ_LOG_BASE": str(root / "log"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
               "RABBITMQ_PLUGINS_EXPAND_DIR": str(root / "plugins-expand"),
               "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
               "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
               "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
               "RABBITMQ_PID_FILE": str(root / "pid")}  # fmt: skip
        cluster.nodes.append(Node(f"{short}@localhost", root, env, port))
    try:
        for node in cluster.nodes:
            node.start()
        with ThreadPoolExecutor(len(cluster.nodes)) as pool:
            list(pool.map(Node.wait, cluster.nodes))
        first = cluster.nodes[0]
        for node in cluster.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
    except Exception:
        cluster.stop()
        raise
    return cluster
