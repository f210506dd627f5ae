"""InfluxDB: events as line protocol points over HTTP (the v1, v2 and v3 write APIs)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed

from duct.lib.http import HTTP_CLIENT_OPTIONS, HTTPError
from duct.lib.lineprotocol import PRECISIONS, FieldValue, line, timestamp
from duct.lib.tokenbucket import TokenBucket
from duct.objects import Event, Output
from duct.options import Option
from duct.output import Refused
from duct.outputs.httppost import KeptConnections
from duct.stats import counter

__all__ = ["InfluxDB", "PRECISION_NAMES", "REFUSED_CODES"]

PRECISION_NAMES: dict[str, str] = {
    **{p: p for p in PRECISIONS},
    "n": "ns",
    "u": "us",
    "nanosecond": "ns",
    "microsecond": "us",
    "millisecond": "ms",
    "second": "s",
}
"""Every spelling of a timestamp precision the option takes, and what it means."""

_WIRE: dict[str, dict[str, str]] = {
    "v1": {"ns": "n", "us": "u", "ms": "ms", "s": "s"},
    "v2": {"ns": "ns", "us": "us", "ms": "ms", "s": "s"},
    "v3": {"ns": "nanosecond", "us": "microsecond", "ms": "millisecond", "s": "second"},
}

_PATHS = {"v1": "/write", "v2": "/api/v2/write", "v3": "/api/v3/write_lp"}

REFUSED_CODES = frozenset({400, 413, 422})
"""Statuses that say the points are at fault (a parse error, a field type
conflict, a partial write, too large a body): the batch is cut down until
the points at fault are found.  Every other failure is retried."""

PLACES = ("tag", "field", "drop")


class InfluxDB(KeptConnections, Output):
    """Write each event as one point of InfluxDB line protocol, over HTTP.

    The measurement is `prefix` and the service; the event's host is the
    tag ``host`` and its metric the field ``value`` (a float, unless
    `integer_metrics`); its time is the point's timestamp, in `precision`.
    The state, the description, the attributes and the Riemann tags go
    where `state_as`, `description_as`, `attributes_as` and `tags_as` say:
    a tag, a field (text), or nowhere.  A Riemann tag ``key=value`` becomes
    ``key``; the other tags, joined by commas, become ``tags``.  The ttl is
    not carried.  An event with nothing to store (no metric, and neither
    state nor description as a field) is skipped and counted as
    ``skipped``.

    `api` picks the write API: ``v1`` (``/write``, with `database`,
    `retention_policy`, and `user`/`password` as basic authentication),
    ``v2`` (``/api/v2/write``, with `org`, `bucket` and `token`) or ``v3``
    (``/api/v3/write_lp``, with `database` and `token`).  A batch counts as
    delivered once InfluxDB answered 2xx.  A 400 (a parse error, a field
    type conflict, a partial write), 413 or 422 is the points' fault: the
    batch is split until the points at fault stand alone, and those are
    dropped and counted as ``rejected``.  InfluxDB stores the good points
    of a partial write, so they are written twice, which changes nothing
    (a point with the same measurement, tags and time replaces itself).
    Any other failure (unreachable, 5xx, 429, bad credentials) is retried
    with backoff.  NaN and infinite metrics cannot be stored and are
    dropped as ``rejected``.
    """

    options = (
        Option("url", "string", "http://localhost:8086", "InfluxDB's base URL"),
        Option(
            "api",
            "string",
            "v1",
            "write API: v1 (/write), v2 (/api/v2/write) or v3 (/api/v3/write_lp)",
            choices=tuple(_PATHS),
        ),
        Option("database", "string", "duct", "database written to (v1 and v3)"),
        Option("retention_policy", "string", None, "retention policy (v1; default: the db's)"),
        Option("org", "string", None, "organization (v2)"),
        Option("bucket", "string", None, "bucket (v2, where it is required)"),
        Option("token", "string", None, "API token (v2 as Token, v3 as Bearer)"),
        Option(
            "precision",
            "string",
            "us",
            "timestamp precision: ns, us, ms or s (also n, u, nanosecond, ...)",
            choices=tuple(PRECISION_NAMES),
        ),
        Option("prefix", "string", "", "put before every measurement name"),
        Option("state_as", "string", "tag", "where the state goes", choices=PLACES),
        Option(
            "description_as",
            "string",
            "field",
            "where the description goes",
            choices=("field", "drop"),
        ),
        Option("attributes_as", "string", "tag", "where the attributes go", choices=PLACES),
        Option("tags_as", "string", "tag", "where the Riemann tags go", choices=PLACES),
        Option(
            "integer_metrics",
            "boolean",
            False,
            "write whole-number metrics as integers (a series must then keep one type)",
        ),
        Option("maxrate", "number", None, "most events written a second (default: no limit)"),
        Option("batch_size", "integer", 5000, "most points in one request", minimum=1),
        *HTTP_CLIENT_OPTIONS,
    )

    stats = (counter("skipped", "skipped", "events_skipped", "events with nothing to store"),)

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        for key, message in self.optionProblems(self.config):
            raise ValueError(f"{key}: {message}")
        config = self.config
        self.api: str = config["api"]
        self.baseURL: str = config["url"].rstrip("/")
        self.precision: str = PRECISION_NAMES[config["precision"]]
        self.prefix: str = config["prefix"]
        self.stateAs: str = config["state_as"]
        self.descriptionAs: str = config["description_as"]
        self.attributesAs: str = config["attributes_as"]
        self.tagsAs: str = config["tags_as"]
        self.integerMetrics: bool = config["integer_metrics"]
        self.skipped = 0
        maxrate = config["maxrate"]
        if maxrate:
            self.bucket = TokenBucket(self.clock, maxrate, min(self.batchSize, int(maxrate)))
        self.writeURL = self.baseURL + _PATHS[self.api]
        self.params = self.writeParams()
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        token = config["token"]
        if token:
            scheme = "Bearer" if self.api == "v3" else "Token"
            self.headers["Authorization"] = f"{scheme} {token}"

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        url = config.get("url") or ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            yield "url", f"expected an http:// or https:// URL, got {url!r}"
        if config.get("api") == "v2" and not config.get("bucket"):
            yield "bucket", "required with api: v2"
        maxrate = config.get("maxrate")
        if maxrate is not None and maxrate < 0:
            yield "maxrate", f"must be at least 0, got {maxrate!r}"

    def writeParams(self) -> dict[str, str]:
        """The query of each write request, as the chosen API names it."""
        config = self.config
        params = {"precision": _WIRE[self.api][self.precision]}
        if self.api == "v2":
            params["bucket"] = config["bucket"]
            if config["org"]:
                params["org"] = config["org"]
        else:
            params["db"] = config["database"]
            if self.api == "v1" and config["retention_policy"]:
                params["rp"] = config["retention_policy"]
        return params

    # -- encoding ----------------------------------------------------------------

    def point(self, event: Event) -> str | None:
        """The event as one line of line protocol; None when it has nothing to store."""
        tags: dict[str, str] = {}
        fields: dict[str, FieldValue] = {}
        places: dict[str, dict[str, Any]] = {"tag": tags, "field": fields}
        if event.tags and self.tagsAs != "drop":
            into = places[self.tagsAs]
            plain = []
            for tag in event.tags:
                key, equals, value = tag.partition("=")
                if equals and key.strip():
                    into[key.strip()] = value.strip()
                else:
                    plain.append(tag)
            if plain:
                into["tags"] = ",".join(plain)
        if event.attributes and self.attributesAs != "drop":
            into = places[self.attributesAs]
            for key, value in event.attributes.items():
                into[str(key)] = str(value)
        if event.state and self.stateAs != "drop":
            places[self.stateAs]["state"] = event.state
        if event.description and self.descriptionAs == "field":
            fields["description"] = event.description
        tags["host"] = event.hostname
        metric = event.metric
        if metric is not None:
            whole = isinstance(metric, int) or (isinstance(metric, float) and metric.is_integer())
            if self.integerMetrics and whole and not isinstance(metric, bool):
                fields["value"] = int(metric)
            else:
                fields["value"] = float(metric)
        if not fields:
            return None
        return line(
            self.prefix + event.service, tags, fields, timestamp(event.time, self.precision)
        )

    # -- writing -------------------------------------------------------------------

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        lines = [text for text in self.encodeEach(events, self.point) if text is not None]
        self.skipped += len(events) - len(lines)
        if not lines:
            return succeed(None)
        body = ("\n".join(lines) + "\n").encode("utf-8")
        return Deferred.fromCoroutine(self.post(body))

    async def post(self, body: bytes) -> None:
        """POST ``body`` to the write endpoint; `Refused` when the points are at fault."""
        try:
            await self.http.request(
                "POST", self.writeURL, headers=self.headers, data=body, params=self.params
            )
        except HTTPError as e:
            if e.code in REFUSED_CODES:
                raise Refused(f"{e.code} {e.body.strip()}", f"InfluxDB at {self.baseURL}") from e
            raise
