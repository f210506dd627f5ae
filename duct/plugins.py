"""Finding plugin classes by dotted path, and describing them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable

from duct.options import Option, declaredOptions, declaresOwnOptions
from duct.output import Output
from duct.source import Source

BUILTIN_SOURCES = (
    "duct.sources.linux.basic.CPU",
    "duct.sources.linux.basic.Memory",
    "duct.sources.linux.basic.LoadAverage",
    "duct.sources.linux.basic.DiskIO",
    "duct.sources.linux.basic.DiskFree",
    "duct.sources.linux.basic.Network",
    "duct.sources.http.Ingest",
    "duct.sources.linux.process.ProcessCount",
    "duct.sources.linux.process.ProcessStats",
    "duct.sources.linux.process.Process",
    "duct.sources.linux.sensors.Sensors",
    "duct.sources.linux.sensors.LMSensors",
    "duct.sources.linux.sensors.SMART",
    "duct.sources.linux.ipsec.StrongSwan",
    "duct.sources.sensors.environment.MPL115",
    "duct.sources.network.HTTP",
    "duct.sources.network.TCP",
    "duct.sources.network.TLS",
    "duct.sources.network.DNS",
    "duct.sources.network.Ping",
    "duct.sources.command.Command",
    "duct.sources.nginx.Nginx",
    "duct.sources.nginx.NginxLogMetrics",
    "duct.sources.nginx.NginxLog",
    "duct.sources.logs.LogFile",
    "duct.sources.apache.Apache",
    "duct.sources.haproxy.HAProxy",
    "duct.sources.prometheus.Scrape",
    "duct.sources.statsd.StatsD",
    "duct.sources.sflow.sFlow",
    "duct.sources.docker.ContainerStats",
    "duct.sources.redis.Queues",
    "duct.sources.redis.Redis",
    "duct.sources.database.memcache.Memcache",
    "duct.sources.database.postgresql.PostgreSQL",
    "duct.sources.database.mysql.MySQL",
    "duct.sources.database.elasticsearch.ElasticSearch",
    "duct.sources.riak.RiakStats",
    "duct.sources.rabbitmq.Queues",
    "duct.sources.generator.Function",
    "duct.sources.munin.MuninNode",
    "duct.sources.nginx.Nginx",
    "duct.sources.mail.SMTP",
    "duct.sources.mail.RoundTrip",
    "duct.sources.postfix.Postfix",
    "duct.sources.python.uwsgi.Emperor",
    "duct.sources.unbound.Stats",
    "duct.sources.amqp.AMQP",
    "duct.sources.riemann.RiemannTCP",
    "duct.sources.riemann.RiemannUDP",
    "duct.sources.selfstats.SelfStats",
    "duct.sources.snmp.SNMP",
    "duct.sources.snmp.SNMPCisco837",
    "duct.sources.Duct",
)

BUILTIN_OUTPUTS = (
    "duct.outputs.amqp.AMQP",
    "duct.outputs.bosun.Bosun",
    "duct.outputs.elasticsearch.ElasticSearch",
    "duct.outputs.file.JSONLines",
    "duct.outputs.http.HTTP",
    "duct.outputs.graphite.Graphite",
    "duct.outputs.logger.Logger",
    "duct.outputs.null.Null",
    "duct.outputs.opentsdb.OpenTSDB",
    "duct.outputs.riemann.RiemannTCP",
    "duct.outputs.riemann.RiemannUDP",
    "duct.outputs.store.Store",
    "duct.outputs.prometheus.Prometheus",
    "duct.outputs.prometheus.RemoteWrite",
    "duct.outputs.influxdb.InfluxDB",
    "duct.outputs.influxdb3.InfluxDB3",
)


class PluginError(ValueError):
    """A dotted path that names no usable plugin class."""


def loadClass(path: str, base: type) -> type:
    """Import ``package.module.Class`` and check that it is a subclass of ``base``."""
    module, _, name = path.rpartition(".")
    if not module or path.startswith(".") or not name:
        raise PluginError(f"{path!r} is not a dotted path such as duct.sources.linux.basic.CPU")
    try:
        loaded = importlib.import_module(module)
    except Exception as e:  # a plugin's module may fail in any way while importing
        raise PluginError(f"cannot import {path}: {type(e).__name__}: {e}") from e
    cls = getattr(loaded, name, None)
    if cls is None:
        raise PluginError(f"cannot import {path}: module {module} has no {name}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{path} is not a subclass of duct.objects.{base.__name__}")
    return cls


def isStrict(cls: type) -> bool:
    """Whether unknown keys are errors for this plugin (it declares its options)."""
    return declaresOwnOptions(cls, (Source, Output, object))


def describe(path: str, base: type) -> str:
    """A plugin's summary and its declared options, as ``duct list`` prints them."""
    cls = loadClass(path, base)
    doc = inspect.getdoc(cls) or ""
    summary = doc.split("\n\n")[0].replace("\n", " ")
    lines = [path, f"    {summary}" if summary else "    (no description)"]
    base_options = declaredOptions(base)
    for name, option in declaredOptions(cls).items():
        if name in base_options and base_options[name] == option:
            continue
        lines.append(f"    - {option.describe()}")
    if not isStrict(cls):
        lines.append("    (declares no options: any extra key is passed through)")
    return "\n".join(lines)


def _optionRows(options: Iterable[Option]) -> list[str]:
    rows = ["| option | type | default | description |", "|---|---|---|---|"]
    for option in options:
        default = "required" if option.required else f"`{option.default!r}`"
        doc = option.doc
        if option.choices:
            doc += " (" + ", ".join(f"`{c}`" for c in option.choices) + ")"
        rows.append(f"| `{option.name}` | {option.kind} | {default} | {doc} |")
    return rows


def referenceMarkdown() -> str:
    """The reference of every built-in plugin, generated from the declarations."""
    parts: list[str] = []
    for title, base, paths in (
        ("Sources", Source, BUILTIN_SOURCES),
        ("Outputs", Output, BUILTIN_OUTPUTS),
    ):
        parts.append(f"### {title}\n")
        parts.append(f"Every {base.__name__.lower()} takes these options:\n")
        parts += _optionRows(declaredOptions(base).values())
        parts.append("")
        for path in paths:
            cls = loadClass(path, base)
            doc = (inspect.getdoc(cls) or "").strip()
            parts.append(f"#### `{path}`\n")
            if doc:
                parts.append(doc + "\n")
            common = declaredOptions(base)
            own = [o for n, o in declaredOptions(cls).items() if common.get(n) != o]
            if own:
                parts += _optionRows(own)
            else:
                parts.append("No options beyond the common ones.")
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"
