"""RemoteWrite: events as samples sent with Prometheus remote write 1.0."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import cramjam
from twisted.internet.defer import Deferred, succeed

from duct import __version__
from duct.lib.http import HTTP_CLIENT_OPTIONS, HTTPError
from duct.lib.promlabels import LABEL_OPTIONS, Labeller, SeriesKey
from duct.objects import Event, Output
from duct.options import REQUIRED, Option
from duct.output import Refused
from duct.outputs.httppost import KeptConnections
from duct.protocol.remote_pb2 import WriteRequest
from duct.stats import counter

__all__ = ["HEADERS", "RemoteWrite", "decodeWriteRequest", "encodeWriteRequest"]

HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": f"duct/{__version__}",
}
"""What remote write 1.0 asks of every request."""

REFUSED_CODES = frozenset({400, 413})
"""Statuses that say the samples are at fault (out of order, a duplicate
timestamp, out of bounds, too large a body): the batch is cut down until
the samples at fault are found.  A 429, a 5xx or anything else is retried."""

Sample = tuple[SeriesKey, float, int]


def encodeWriteRequest(samples: list[Sample]) -> bytes:
    """A snappy-compressed ``WriteRequest``: one time series per key, samples in time order."""
    series: dict[SeriesKey, list[tuple[int, float]]] = {}
    for key, value, millis in samples:
        series.setdefault(key, []).append((millis, value))
    request = WriteRequest()
    for (name, labels), points in series.items():
        timeseries = request.timeseries.add()
        for label, text in sorted((("__name__", name), *labels)):
            timeseries.labels.add(name=label, value=text)
        points.sort(key=lambda point: point[0])
        for millis, value in points:
            timeseries.samples.add(value=value, timestamp=millis)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def decodeWriteRequest(body: bytes) -> WriteRequest:
    """The ``WriteRequest`` in a snappy-compressed body (for receivers and tests)."""
    request = WriteRequest()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return request


class RemoteWrite(KeptConnections, Output):
    """Send each event as a sample to a Prometheus remote write receiver (protocol 1.0).

    The series is named and labelled as for the `Prometheus` output
    (`prefix` and the service, ``host``, the attributes `labels` allows,
    `tags_label`); the sample is the metric at the event's time, in
    milliseconds.  A batch goes as one ``WriteRequest``, protobuf in a
    snappy block, and counts as delivered once the receiver answered 2xx.
    A 400 or 413 (a sample out of order or out of bounds, a duplicate
    timestamp with another value, too large a body) is the samples'
    fault: the batch is split until the samples at fault stand alone, and
    those are dropped and counted as ``rejected``.  A 429, a 5xx or no
    answer is retried with backoff; so is a 401, 403 or 404, which no
    sample can fix (``/health`` then shows the output stalled).

    Not carried: the state, the description and the ttl, and events
    with no metric, which are skipped and counted as ``skipped``.
    Receivers reject samples of a series older than its newest, so keep
    `max_in_flight` at 1 for an ordered stream.
    """

    options = (
        Option("url", "string", REQUIRED, "the receiver, as http://host:9090/api/v1/write"),
        *LABEL_OPTIONS,
        Option("batch_size", "integer", 2000, "most samples in one request", minimum=1),
        *HTTP_CLIENT_OPTIONS,
    )

    stats = (counter("skipped", "skipped", "events_skipped", "events with no metric"),)

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        for key, message in self.optionProblems(self.config):
            raise ValueError(f"{key}: {message}")
        self.url: str = self.config["url"]
        self.labeller = Labeller(self.config)
        self.skipped = 0

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        url = config.get("url") or ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            yield "url", f"expected an http:// or https:// URL, got {url!r}"

    def sample(self, event: Event) -> Sample | None:
        """The series, value and time in milliseconds of an event; None with no metric."""
        if event.metric is None:
            return None
        key = self.labeller.key(event)
        name, labels = key
        for text in (name, *(part for pair in labels for part in pair)):
            text.encode("utf-8")  # protobuf strings are UTF-8: a lone surrogate fails here
        value = float(event.metric)
        millis = round(event.time * 1000)
        if math.isnan(value):
            value = math.nan  # a plain NaN, never the bits of Prometheus's stale marker
        return key, value, millis

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        samples = [s for s in self.encodeEach(events, self.sample) if s is not None]
        self.skipped += len(events) - len(samples)
        if not samples:
            return succeed(None)
        return Deferred.fromCoroutine(self.post(encodeWriteRequest(samples)))

    async def post(self, body: bytes) -> None:
        """POST ``body``; `Refused` when the receiver says the samples are at fault."""
        try:
            await self.http.request("POST", self.url, headers=HEADERS, data=body)
        except HTTPError as e:
            if e.code in REFUSED_CODES:
                raise Refused(f"{e.code} {e.body.strip()}", f"remote write at {self.url}") from e
            raise
