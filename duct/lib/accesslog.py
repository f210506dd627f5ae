"""`AccessLogParser`: web server access log lines, in a named or a given format.

A format is written as the server's own configuration writes it: nginx's
``log_format`` (``$remote_addr - $remote_user [$time_local] "$request"
...``) or Apache's ``LogFormat`` (``%h %l %u %t \\"%r\\" %>s %b``), or named:
``combined``, ``common`` or ``vhcommon``.  A parsed line is a dict whose
keys are the original duct's field names (``client``, ``user``, ``time``,
``request``, ``status``, ``bytes``, ``referer``, ``user-agent``, ...);
a variable it does not know keeps its own name.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

FORMATS = {
    "common": r"%h %l %u %t \"%r\" %>s %b",
    "vhcommon": r"%v %h %l %u %t \"%r\" %>s %b",
    "combined": r"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\"",
}

NAMES = {
    # Apache directives
    "%h": "client",
    "%a": "client-ip",
    "%b": "bytes",
    "%B": "bytes",
    "%D": "request-time",
    "%T": "request-time",
    "%f": "filename",
    "%l": "logname",
    "%u": "user",
    "%t": "time",
    "%r": "request",
    "%>s": "status",
    "%s": "status",
    "%v": "vhost",
    # nginx variables
    "$remote_addr": "client",
    "$remote_user": "user",
    "$time_local": "time",
    "$request": "request",
    "$status": "status",
    "$body_bytes_sent": "bytes",
    "$bytes_sent": "bytes",
    "$http_referer": "referer",
    "$http_user_agent": "user-agent",
    "$request_time": "request-time",
    "$host": "vhost",
}
INTEGERS = {"status", "bytes"}
TOKEN = re.compile(r"%\{([^}]+)\}[ioe]|%>?[a-zA-Z]|\$[a-z_0-9]+")


class AccessLogParser:
    """Turns lines of one access log format into dicts (`parse`: None if one does not match)."""

    def __init__(self, fmt: str = "combined") -> None:
        fmt = FORMATS.get(fmt, fmt).replace('\\"', '"').strip()
        self.names: list[str] = []
        pattern = ""
        position = 0
        for found in TOKEN.finditer(fmt):
            literal = fmt[position : found.start()]
            pattern += re.escape(literal)
            token = found.group(0)
            name = (
                found.group(1).lower() if found.group(1) else NAMES.get(token, token.lstrip("$%"))
            )
            before = literal[-1:] or (fmt[found.start() - 1] if found.start() else "")
            if before == '"':
                pattern += r'((?:[^"\\]|\\.)*)'
            elif before == "[" or token in ("%t", "$time_local"):
                pattern += r"(\[?[^\]]*\]?)" if before != "[" else r"([^\]]*)"
            else:
                pattern += r"(\S*)"
            self.names.append(name)
            position = found.end()
        pattern += re.escape(fmt[position:])
        self.format = fmt
        self.regex = re.compile(pattern + r"\s*$")

    def parse(self, line: str) -> dict[str, Any] | None:
        found = self.regex.match(line)
        if found is None:
            return None
        fields: dict[str, Any] = {}
        for name, value in zip(self.names, found.groups(), strict=True):
            if name in INTEGERS:
                fields[name] = int(value) if value.isdigit() else 0
            elif name == "time":
                fields[name] = parseTime(value)
            else:
                fields[name] = value
        return fields


def parseTime(value: str) -> datetime.datetime | None:
    """``10/Oct/2000:13:55:36 -0700`` (with or without brackets) as an aware datetime."""
    try:
        return datetime.datetime.strptime(value.strip("[]"), "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        return None
