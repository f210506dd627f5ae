"""A real RabbitMQ for the tests: Debian's rabbitmq-server, its files under tmp.

`startRabbitMQ` enables the management plugin offline, starts the broker
on free ports of 127.0.0.1 (AMQP, Erlang distribution, epmd and the
management API, so nothing is shared with a system broker) and returns
once ``rabbitmqctl wait`` says it runs.  `env` is what ``rabbitmqctl``
needs to reach it: the same node name, cookie (``HOME``) and epmd port.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort

BIN = Path("/usr/lib/rabbitmq/bin")


@dataclass
class RabbitMQ:
    root: Path
    env: dict[str, str]
    managementPort: int
    process: subprocess.Popen[bytes]
    version: str = ""

    @property
    def managementURL(self) -> str:
        return f"http://127.0.0.1:{self.managementPort}"

    @property
    def amqpURL(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.env['RABBITMQ_NODE_PORT']}/%2F"

    def ctl(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "rabbitmqctl"), *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        return done.stdout

    def api(self, method: str, path: str, body: object = None) -> object:
        data = json.dumps(body).encode() if body else None
        url = f"{self.managementURL}/api/{path}"
        request = urllib.request.Request(url, method=method, data=data)
        request.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def publish(self, queue: str, count: int) -> None:
        message = {"properties": {}, "routing_key": queue, "payload": "x",
                   "payload_encoding": "string"}  # fmt: skip
        for _ in range(count):
            self.api("POST", "exchanges/%2F/amq.default/publish", message)

    def stop(self) -> None:
        import shutil

        subprocess.run([str(BIN / "rabbitmqctl"), "stop"], env=self.env, capture_output=True,
                       timeout=120, check=False)  # fmt: skip
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # The broker started its own epmd on a port of its own: ask that one to go.
        subprocess.run(["epmd", "-kill"], env=self.env, capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def findRabbitMQ() -> str | None:
    return debianBinary("/usr/sbin/rabbitmq-server", "rabbitmq-server")


def startRabbitMQ() -> RabbitMQ:
    root = Path(tempfile.mkdtemp(prefix="duct-rabbitmq-"))
    management = freePort()
    (root / "rabbitmq.conf").write_text(
        f"management.tcp.port = {management}\nmanagement.tcp.ip = 127.0.0.1\n"
        "loopback_users = none\n"
    )
    env = {**os.environ, "HOME": str(root), "RABBITMQ_NODENAME": "duct-test@localhost",
           "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(freePort()),
           "RABBITMQ_DIST_PORT": str(freePort()), "ERL_EPMD_PORT": str(freePort()),
           "RABBITMQ_MNESIA_BASE": str(root / "mnesia"), "RABBITMQ_LOG_BASE": str(root / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
           "RABBITMQ_PLUGINS_EXPAND_DIR": str(root / "plugins-expand"),
           "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
           "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
           "RABBITMQ_PID_FILE": str(root / "pid")}  # fmt: skip
    enable = [str(BIN / "rabbitmq-plugins"), "--offline", "enable", "rabbitmq_management"]
    subprocess.run(enable, env=env, check=True, capture_output=True, timeout=120)
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the broker's for its life
    process = subprocess.Popen([str(BIN / "rabbitmq-server")], env=env, stdout=log,
                               stderr=subprocess.STDOUT, cwd=root)  # fmt: skip
    server = RabbitMQ(root, env, management, process)
    try:
        server.ctl("wait", "--timeout", "120", str(root / "pid"))
        server.version = server.ctl("version").strip()
    except Exception:
        server.stop()
        raise
    return server
