"""Host key checking for SSH connections, against an OpenSSH ``known_hosts`` file.

A host on port 22 is looked up by its name, any other port as
``[name]:port``, as OpenSSH writes them (hashed entries match too).  A key
that is not in the file, or that differs from the one the file holds,
fails the connection with `UnknownHostKey` or `ChangedHostKey`.  Only with
``acceptUnknown`` is a key the file does not know accepted, with a
warning; it is then remembered for the life of the process (nothing is
written to the file), so a later change of that key still fails.  A key
the file holds with another value always fails.
"""

from __future__ import annotations

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import HostKeyChanged
from twisted.conch.ssh.keys import FingerprintFormats, Key
from twisted.logger import Logger
from twisted.python.filepath import FilePath


class SSHError(Exception):
    """An SSH connection or command failed."""


class HostKeyError(SSHError):
    """The server's host key could not be verified: nothing was sent to it."""


class UnknownHostKey(HostKeyError):
    """The known hosts file has no key for the host."""


class ChangedHostKey(HostKeyError):
    """The known hosts file holds another key for the host."""


def knownHostsName(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def describeKey(key: Key) -> str:
    """``ssh-ed25519 SHA256:...``, as ``ssh-keygen -l`` shows a key."""
    fingerprint = key.fingerprint(format=FingerprintFormats.SHA256_BASE64).rstrip("=")
    return f"{key.sshType().decode('ascii')} SHA256:{fingerprint}"


class HostKeyPolicy:
    """Checks host keys against one known_hosts file.

    :param path: the OpenSSH known_hosts file; it is read at each check, so
        an edit takes effect at the next connection.
    :param acceptUnknown: accept (with a warning) a key for a host the file
        does not list.
    """

    log = Logger()

    def __init__(self, path: str, acceptUnknown: bool = False) -> None:
        self.path = path
        self.acceptUnknown = acceptUnknown
        self.accepted: dict[str, Key] = {}
        """Keys accepted though the file lacks them, by known_hosts name."""

    def check(self, host: str, port: int, key: Key) -> None:
        """Return if ``key`` is the right key for ``host``; raise `HostKeyError` if not."""
        name = knownHostsName(host, port)
        where = f"{host} port {port}"
        known = KnownHostsFile.fromPath(FilePath(self.path))
        try:
            if known.hasHostKey(name.encode("utf-8"), key):
                return
        except HostKeyChanged as e:
            line = f" line {e.lineno}" if e.lineno else ""
            raise ChangedHostKey(
                f"host key of {where} ({describeKey(key)}) differs from the one in "
                f"{self.path}{line}: the host was reinstalled, or something is "
                f"impersonating it; check it, then replace that line"
            ) from None
        remembered = self.accepted.get(name)
        if remembered is not None:
            if remembered == key:
                return
            raise ChangedHostKey(
                f"host key of {where} ({describeKey(key)}) differs from the one accepted "
                f"earlier ({describeKey(remembered)}), and {self.path} lists neither"
            )
        if not self.acceptUnknown:
            raise UnknownHostKey(
                f"host key of {where} ({describeKey(key)}) is not in {self.path}: "
                f"add it (ssh-keyscan -p {port} {host} >> {self.path}, after checking "
                f"the fingerprint) or set ssh_accept_unknown_hosts"
            )
        self.accepted[name] = key
        self.log.warn(
            "ssh: accepting unknown host key {key} of {host} port {port}, not in {path} "
            "(ssh_accept_unknown_hosts)",
            key=describeKey(key),
            host=host,
            port=port,
            path=self.path,
        )
