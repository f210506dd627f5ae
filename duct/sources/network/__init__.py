"""Network checks: HTTP, TCP, TLS, DNS and Ping, under the original duct's paths.

``source: duct.sources.network.HTTP`` and ``duct.sources.network.Ping``
keep the original's keys; each check lives in a module of its own.
"""

from duct.sources.network.dns import DNS
from duct.sources.network.http import HTTP
from duct.sources.network.ping import Ping
from duct.sources.network.tcp import TCP
from duct.sources.network.tls import TLS

# Their public home, for error messages, documentation and dotted paths.
for _cls in (DNS, HTTP, Ping, TCP, TLS):
    _cls.__module__ = __name__
del _cls

__all__ = ["DNS", "HTTP", "TCP", "TLS", "Ping"]
