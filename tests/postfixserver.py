"""A real postfix for the tests: Debian's, an instance of its own under a temporary directory.

`startPostfix` writes a main.cf and master.cf (smtpd on a free port of
127.0.0.1, nothing chrooted) with the queue and data directories under
``root``, and starts the instance with ``postfix -c``.  Every message is
for a ``defer_transports`` transport, so it waits in the deferred queue:
nothing leaves the machine; only `MAILBOX` is delivered, to a maildir
under ``root/mail`` (what `dovecotserver` serves over IMAP).  smtpd
refuses one recipient, `REJECTED`.
A second smtpd, on ``tlsPort``, offers STARTTLS.  ``root`` must be
reachable by the postfix user, so `startPostfix` opens it to all
(pytest's own tmp is private).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import answers, debianBinary, freePort, processExit, waitUntil
from netpeers import CertificateAuthority

POSTFIX = "/usr/sbin/postfix"

MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
meta_directory = /etc/postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = duct.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:1
defer_transports = smtp
alias_maps =
alias_database =
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtpd_recipient_restrictions =
    check_recipient_access inline:{{ {{ {rejected} = REJECT no such mailbox here }} }}
    permit_mynetworks reject_unauth_destination
virtual_mailbox_domains = mail.duct.test
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = inline:{{ {mailbox}=probe/ }}
virtual_minimum_uid = 100
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{uid}
"""

REJECTED = "rejected@duct.test"
MAILBOX = "probe@mail.duct.test"
"""The one address delivered here, by virtual(8), to the maildir ``mail/probe/``."""
MAIL_UID = 65534
"""Who owns the maildirs (nobody), for postfix's virtual(8) and for dovecot."""
"""The one recipient smtpd refuses, with ``554 5.7.1 <...>: Recipient address rejected``."""

# Debian's master.cf up to postlog, with smtpd on the port and nothing chrooted; a
# second smtpd offers STARTTLS with a certificate for 127.0.0.1 from the test CA; a
# third takes mail only after AUTH, checked by dovecot through the socket sasl/auth.
MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{tlsPort} inet n - n - - smtpd
  -o smtpd_tls_security_level=may
  -o smtpd_tls_cert_file={root}/conf/smtpd.pem
  -o smtpd_tls_key_file={root}/conf/smtpd.key
  -o smtpd_tls_loglevel=1
127.0.0.1:{authPort} inet n - n - - smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path={root}/sasl/auth
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


@dataclass
class PostfixServer:
    root: Path
    port: int
    tlsPort: int
    """smtpd offering STARTTLS, with a certificate that `ca` issued."""
    authPort: int
    """smtpd taking mail only from a client that authenticated (against `sasl`).

    Each of its connections asks dovecot, so only a test with dovecot running uses it.
    """

    @property
    def sasl(self) -> str:
        """Where smtpd asks dovecot about a login: the socket a `dovecotserver` listens on."""
        return str(self.root / "sasl" / "auth")

    @property
    def ca(self) -> str:
        """The PEM file of the CA that issued the STARTTLS certificate."""
        return str(self.root / "conf" / "ca.pem")

    @property
    def conf(self) -> str:
        return str(self.root / "conf")

    @property
    def spool(self) -> str:
        return str(self.root / "queue")

    def send(self, count: int) -> list[str]:
        """Submit ``count`` messages over SMTP; the queue ids postfix gave them."""
        ids = []
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            for n in range(count):
                smtp.mail("duct@duct.test")
                smtp.rcpt(f"nobody{n}@example.invalid")
                code, reply = smtp.data(b"Subject: duct\r\n\r\nA test.\r\n")
                assert code == 250, reply
                ids.append(reply.decode().rsplit(" ", 1)[-1])
        return ids

    def queued(self, messageId: str) -> str:
        """The queued message whose Message-ID is ``messageId``, headers and body, from postcat.

        Empty while cleanup has not logged it yet.
        """
        for line in self.log().splitlines():
            if f"message-id={messageId}" in line:
                queueId = line.split(": ", 2)[1]
                done = subprocess.run(["/usr/sbin/postcat", "-c", self.conf, "-q", queueId],
                                      capture_output=True, text=True, timeout=60)  # fmt: skip
                return done.stdout
        return ""

    def postsuper(self, *args: str) -> None:
        subprocess.run(["/usr/sbin/postsuper", "-c", self.conf, *args], check=True,
                       capture_output=True, timeout=60)  # fmt: skip

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", self.conf, "stop"], capture_output=True, timeout=60)
        pid = self.root / "queue" / "pid" / "master.pid"
        try:
            processExit(int(pid.read_text()), 30)
        except (OSError, ValueError):  # no pid file: the master is gone
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def findPostfix() -> str | None:
    return debianBinary(POSTFIX, "postfix")


def startPostfix(binary: str, root: Path) -> PostfixServer:
    """Start the instance under ``root``; smtpd accepts connections once this returns."""
    root.chmod(0o755)
    port, tlsPort, authPort = freePort(), freePort(), freePort()
    (root / "conf").mkdir()
    issued = CertificateAuthority(root / "conf").issue(("127.0.0.1", "localhost"))
    (root / "conf" / "smtpd.pem").write_bytes(issued.cert)
    (root / "conf" / "smtpd.key").write_bytes(issued.key)
    (root / "conf" / "smtpd.key").chmod(0o600)
    (root / "queue").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix")
    (root / "sasl").mkdir()
    (root / "mail").mkdir()
    os.chown(root / "mail", MAIL_UID, MAIL_UID)
    (root / "conf" / "main.cf").write_text(
        MAIN.format(root=root, rejected=REJECTED, mailbox=MAILBOX, uid=MAIL_UID)
    )
    (root / "conf" / "master.cf").write_text(
        MASTER.format(port=port, tlsPort=tlsPort, authPort=authPort, root=root)
    )
    server = PostfixServer(root, port, tlsPort, authPort)
    done = subprocess.run([binary, "-c", server.conf, "start"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"postfix did not start: {done.stderr}{server.log()}")
    master = int((root / "queue" / "pid" / "master.pid").read_text())
    try:
        for listening in (port, tlsPort):  # authPort's smtpd exits while dovecot is not up
            waitUntil(lambda p=listening: answers(p, b"220", timeout=5), "postfix", 30, pid=master)
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(f"{e}: {server.log()}") from None
    return server
