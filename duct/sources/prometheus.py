"""Scraping a Prometheus exposition endpoint: one event per sample."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from duct.aggregators import Counter64
from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import REQUIRED, Option
from duct.stats import counter

RATES = ("counter",)
"""Metric types whose samples grow: each becomes a per-second rate (``Counter64``)."""


class Scrape(Source):
    """Scrapes the Prometheus text exposition at ``url``: one event per sample.

    Each sample is ``{service}.<sample name>``, its labels attributes.
    Samples of a counter (not its ``_created``) are
    per-second rates; the rest are values as scraped.  At most
    ``max_samples`` samples are taken from a scrape, the rest counted in
    ``dropped``; NaN values are skipped.  ``{service}.state`` is critical
    when the endpoint cannot be scraped within ``timeout`` or its page does
    not parse.
    """

    sync = True
    options = (
        Option("url", "string", REQUIRED, "URL of the exposition, e.g. http://host:9100/metrics"),
        Option("max_samples", "integer", 10000, "most samples taken from one scrape", minimum=1),
        Option("match", "string", None, "only samples whose name starts with this"),
        *HTTP_CLIENT_OPTIONS,
    )
    stats = (counter("dropped", "dropped", "dropped", "samples beyond max_samples"),)

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.dropped = 0

    async def get(self) -> list[Event]:
        url = self.config["url"]
        try:
            text = (await self.http.getBody(url)).decode("utf-8", "replace")
            families = list(text_string_to_metric_families(text))
        except Exception as e:
            return [self.createEvent("critical", f"cannot scrape {url}: {e}", 0, "state")]
        events = [self.createEvent("ok", f"scraped {url}", 1, "state")]
        limit, prefix = self.config["max_samples"], self.config["match"]
        taken = 0
        for family in families:
            rate = family.type in RATES
            for sample in family.samples:
                if prefix and not sample.name.startswith(prefix):
                    continue
                if math.isnan(sample.value):
                    continue
                if taken >= limit:
                    self.dropped += 1
                    continue
                taken += 1
                created = sample.name.endswith("_created")
                when = None if sample.timestamp is None else float(sample.timestamp)
                events.append(self.createEvent(
                    "ok", family.documentation or sample.name, sample.value, sample.name,
                    aggregation=Counter64 if rate and not created else None,
                    evtime=when, attributes=sample.labels or None,
                ))  # fmt: skip
        return events
