"""A real Docker Engine for the tests: Debian's dockerd on a private socket, with two containers.

No image registry is reachable, so the image is imported from a tarball
holding Debian's static busybox.  dockerd keeps its data, its state and
its socket under the session's temporary directory and leaves the host's
network alone (no bridge, no iptables); the containers have no network.
One container sleeps with ``MARATHON_APP_ID`` in its environment, the
other spends a little CPU every second.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, waitUntil
from serverprocess import ServerProcess

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
BUSYBOX = "/bin/busybox"
IMAGE = "duct-test/busybox:1"
MARATHON_APP = "/shop/cart"
BUSY = "duct-busy"


@dataclass
class DockerEngine:
    process: ServerProcess
    socket: Path
    root: Path

    def docker(self, *args: str) -> str:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        done = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=True)  # fmt: skip
        return done.stdout.strip()

    def stop(self) -> None:
        try:
            ids = self.docker("ps", "-aq").split()
            if ids:
                self.docker("rm", "-f", *ids)
        finally:
            self.process.stop()


def findDockerd() -> str | None:
    if debianBinary(BUSYBOX, "busybox-static") is None:
        return None
    return debianBinary(DOCKERD, "docker.io")


def _image(root: Path) -> Path:
    tarball = root / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
        for applet in ("sh", "sleep", "dd", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link, io.BytesIO(b""))
    return tarball


def startDocker(binary: str, root: Path) -> DockerEngine:
    socket = root / "docker.sock"
    command = [binary, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
               "--pidfile", str(root / "dockerd.pid"), "--host", f"unix://{socket}",
               "--iptables=false", "--ip-masq=false", "--ip-forward=false",
               "--bridge=none"]  # fmt: skip
    process = ServerProcess(command, "API listen on", root / "dockerd.log")
    process.start()
    engine = DockerEngine(process, socket, root)
    try:
        engine.docker("import", str(_image(root)), IMAGE)
        app = f"MARATHON_APP_ID={MARATHON_APP}"
        engine.docker("run", "-d", "--name", "duct-app", "--network", "none", "-e", app,
                      IMAGE, "/bin/sleep", "3600")  # fmt: skip
        engine.docker("run", "-d", "--name", BUSY, "--network", "none", IMAGE, "/bin/sh", "-c",
                      "while true; do dd if=/dev/zero of=/dev/null bs=64k count=2000"
                      " 2>/dev/null; sleep 1; done")  # fmt: skip
        waitUntil(lambda: len(engine.docker("ps", "-q").split()) == 2, "the containers", 60,
                  process=process.process)  # fmt: skip
    except BaseException:
        engine.stop()
        raise
    return engine
