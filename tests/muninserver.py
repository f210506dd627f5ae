"""A real munin-node for the tests: Debian's, with its own plugins under a temporary directory.

munin-node reads its plugins from ``MUNIN_CONFDIR/plugins`` and has no
option to name another directory, so `startMunin` loads the script with
that directory pointed under ``root``.  Two shell plugins: ``load`` (a
GAUGE, always 0.25) and ``requests`` (a DERIVE read from the file
``served``, which a test may raise).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import answers, debianBinary, freePort, waitUntil
from spawn import stopProcess

MUNIN_NODE = "/usr/sbin/munin-node"

LOAD = """\
#!/bin/sh
if [ "$1" = config ]; then
    echo 'graph_title Load'
    echo 'graph_category system'
    echo 'load.label load'
    echo 'load.info 5 minute load average'
    echo 'load.type GAUGE'
    exit 0
fi
echo 'load.value 0.25'
"""

REQUESTS = """\
#!/bin/sh
if [ "$1" = config ]; then
    echo 'graph_title Requests'
    echo 'graph_category webserver'
    echo 'served.label served'
    echo 'served.type DERIVE'
    echo 'served.min 0'
    exit 0
fi
echo "served.value $(cat {root}/served)"
"""

CONFIG = """\
log_level 4
log_file {root}/munin-node.log
pid_file {root}/munin-node.pid
background 0
setsid 0
user root
group root
host 127.0.0.1
port {port}
allow ^127\\.0\\.0\\.1$
"""

# munin-node runs main() only when it is not loaded by another script.
LOADER = """\
require Munin::Common::Defaults;
$Munin::Common::Defaults::MUNIN_CONFDIR = $ENV{{DUCT_MUNIN_ROOT}};
$Munin::Common::Defaults::MUNIN_PLUGSTATE = "$ENV{{DUCT_MUNIN_ROOT}}/state";
do "{binary}";
die $@ if $@;
exit main::main();
"""


@dataclass
class MuninServer:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def setServed(self, count: int) -> None:
        (self.root / "served").write_text(f"{count}\n")

    def log(self) -> str:
        return (self.root / "munin-node.log").read_text(errors="replace")

    def stop(self) -> None:
        stopProcess(self.process)


def findMunin() -> str | None:
    return debianBinary(MUNIN_NODE, "munin-node")


def startMunin(binary: str, root: Path) -> MuninServer:
    """Start munin-node under ``root``; it accepts connections once this returns."""
    port = freePort()
    for name in ("plugins", "plugin-conf.d", "state"):
        (root / name).mkdir()
    for name, script in (("load", LOAD), ("requests", REQUESTS.format(root=root))):
        plugin = root / "plugins" / name
        plugin.write_text(script)
        plugin.chmod(0o755)
    (root / "plugin-conf.d" / "all").write_text("[*]\nuser root\n")  # the tmp dir is private
    (root / "served").write_text("1000\n")
    conf = root / "munin-node.conf"
    conf.write_text(CONFIG.format(root=root, port=port))
    command = ["perl", "-e", LOADER.format(binary=binary), "--", "--config", str(conf),
               "--foreground"]  # fmt: skip
    env = {"DUCT_MUNIN_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    with (root / "stderr").open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    server = MuninServer(root, port, process)
    try:
        waitUntil(lambda: answers(port, b"# munin node"), "munin-node", 30, process=process)
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(f"{e}: {(root / 'stderr').read_text()}") from None
    return server
