"""The ``use_ssh`` options of a source, and what they describe: an `SSHTarget`.

Every source takes `SSH_OPTIONS`.  Those in `INHERITED` may also be set at
the top level of duct.yml, and a source that does not set one takes the
top-level value.  This module imports nothing of twisted.conch until a key
is loaded, so an agent without remote checks does not pay for it.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from duct.options import Option

if TYPE_CHECKING:
    from twisted.conch.ssh.keys import Key

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_TIMEOUT = 30.0
"""Seconds a command or a file read may take when a source sets no ``timeout``."""

SSH_OPTIONS: tuple[Option, ...] = (
    Option("use_ssh", "boolean", False, "run this source's commands and file reads over SSH"),
    Option("ssh_host", "string", None, "host to connect to (default: the source's hostname)"),
    Option("ssh_port", "integer", 22, "SSH port", minimum=1),
    Option("ssh_username", "string", None, "user to log in as (default: the agent's user)"),
    Option("ssh_password", "string", None, "password to log in with"),
    Option("ssh_key", "string", None, "private key to log in with, as text (PEM or OpenSSH)"),
    Option("ssh_keyfile", "string", None, "file of the private key to log in with"),
    Option("ssh_keypass", "string", None, "passphrase of ssh_key or ssh_keyfile"),
    Option(
        "ssh_knownhosts_file",
        "string",
        DEFAULT_KNOWN_HOSTS,
        "OpenSSH known_hosts file the host keys are checked against",
    ),
    Option(
        "ssh_accept_unknown_hosts",
        "boolean",
        False,
        "accept, with a warning, a host key the known_hosts file lacks",
    ),
)

INHERITED: tuple[str, ...] = tuple(
    option.name for option in SSH_OPTIONS if option.name not in ("use_ssh", "ssh_host")
)
"""The options a source takes from the top level of duct.yml when it does not set them."""

GLOBAL_SSH_OPTIONS: tuple[Option, ...] = tuple(o for o in SSH_OPTIONS if o.name in INHERITED)


@dataclass(frozen=True)
class SSHTarget:
    """Where to connect and how to log in.

    Connections are shared by sources whose targets are the same in every
    part (`identity`): the same account reached with other credentials, or
    with other host-key rules, gets a connection of its own, so that no
    source runs on a connection it could not have opened itself.
    """

    host: str
    port: int
    username: str
    keys: tuple[Key, ...] = field(default=(), compare=False, repr=False)
    password: str | None = field(default=None, compare=False, repr=False)
    agentSocket: str | None = field(default=None, compare=False)
    knownHosts: str = field(default="", compare=False)
    acceptUnknown: bool = field(default=False, compare=False)

    @property
    def key(self) -> tuple[str, int, str]:
        """The account: ``(host, port, username)``."""
        return (self.host, self.port, self.username)

    @property
    def identity(self) -> tuple[Any, ...]:
        """The account, the credentials and the host-key rules: what a shared connection needs."""
        keys = tuple(key.fingerprint() for key in self.keys)
        return (
            *self.key,
            keys,
            self.password,
            self.agentSocket,
            self.knownHosts,
            self.acceptUnknown,
        )

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def loadKey(config: Mapping[str, Any], name: str) -> Key:
    """The private key of option ``name`` (``ssh_key`` or ``ssh_keyfile``); ValueError if bad."""
    from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key

    passphrase = config.get("ssh_keypass")
    secret = passphrase.encode("utf-8") if passphrase else None
    try:
        if name == "ssh_key":
            return Key.fromString(config["ssh_key"].encode("utf-8"), passphrase=secret)
        return Key.fromFile(os.path.expanduser(config["ssh_keyfile"]), passphrase=secret)
    except EncryptedKeyError:
        raise ValueError("the key is encrypted: set ssh_keypass") from None
    except (BadKeyError, ValueError) as e:
        raise ValueError(f"not a private key the client can use: {e}") from None
    except OSError as e:
        raise ValueError(f"cannot read it: {e.strerror or e}") from None


def agentSocket(environ: Mapping[str, str] | None = None) -> str | None:
    """The SSH agent's socket (``SSH_AUTH_SOCK``), if one is there."""
    path = (os.environ if environ is None else environ).get("SSH_AUTH_SOCK")
    return path if path and os.path.exists(path) else None


def sshProblems(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(key, message)`` for each reason a ``use_ssh`` source could not log in."""
    if not config.get("use_ssh"):
        return []
    problems: list[tuple[str, str]] = []
    ways = [name for name in ("ssh_key", "ssh_keyfile", "ssh_password") if config.get(name)]
    if not ways and agentSocket(environ) is None:
        problems.append(
            (
                "ssh_key",
                "use_ssh needs a way to log in: ssh_key, ssh_keyfile or ssh_password "
                "(here or at the top level), or an SSH agent (SSH_AUTH_SOCK)",
            )
        )
    for name in ("ssh_key", "ssh_keyfile"):
        if config.get(name):
            try:
                loadKey(config, name)
            except ValueError as e:
                problems.append((name, str(e)))
    return problems


def targetOf(config: Mapping[str, Any], hostname: str) -> SSHTarget:
    """The `SSHTarget` a source's validated config describes; ValueError if a key is bad."""
    keys = tuple(loadKey(config, name) for name in ("ssh_key", "ssh_keyfile") if config.get(name))
    return SSHTarget(
        host=config.get("ssh_host") or hostname,
        port=int(config.get("ssh_port") or 22),
        username=config.get("ssh_username") or getpass.getuser(),
        keys=keys,
        password=config.get("ssh_password"),
        agentSocket=agentSocket(),
        knownHosts=os.path.expanduser(config.get("ssh_knownhosts_file") or DEFAULT_KNOWN_HOSTS),
        acceptUnknown=bool(config.get("ssh_accept_unknown_hosts")),
    )
