"""A real IMAP server for the tests: Debian's dovecot, an instance of its own, on a free port.

`startDovecot` serves the maildirs the session's postfix delivers to
(``mail/<user>/`` under its root) over IMAP on 127.0.0.1, to any user
with the password `PASSWORD`, and returns once it greets.  It checks the
logins of postfix's SMTP AUTH listener too, with the same password.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import answers, debianBinary, freePort, waitUntil
from spawn import stopProcess

DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "duct-secret"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = duct-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mail}/%n
first_valid_uid = 100
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={mail}/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  unix_listener {sasl} {{
    mode = 0666
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"""


@dataclass
class DovecotServer:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stopProcess(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


def findDovecot() -> str | None:
    return debianBinary(DOVECOT, "dovecot-imapd")


def startDovecot(binary: str, root: Path, mail: Path, uid: int, sasl: str) -> DovecotServer:
    """Run dovecot in the foreground under ``root``, serving the maildirs in ``mail``.

    It also answers postfix's questions about SMTP logins on the socket ``sasl``.
    """
    root.chmod(0o755)
    port = freePort()
    conf = root / "dovecot.conf"
    conf.write_text(
        CONFIG.format(root=root, mail=mail, port=port, uid=uid, password=PASSWORD, sasl=sasl)
    )
    with (root / "stderr").open("wb") as stderr:
        process = subprocess.Popen([binary, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    server = DovecotServer(root, port, process)
    try:
        waitUntil(lambda: answers(port, b"* OK", timeout=5), "dovecot", 30, process=process)
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(f"{e}: {(root / 'stderr').read_text()}{server.log()}") from None
    return server
