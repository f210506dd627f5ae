"""``/health``: 200 while every listener listens and every output can deliver.

Otherwise 503, with the reasons.  A listener (a source with ``listens``,
such as the Riemann TCP and UDP ones) is healthy while it is bound; one
that is not is named with why (its ``down``).

An output is healthy when it is connected to its destination, or when its
buffer is below the high-water mark: 80% (`HIGH_WATER`) of its
``maxsize`` in events and of its ``max_bytes`` in bytes.  So a brief
disconnection is not an alarm, and a backlog that keeps growing while
disconnected is.  Outputs without a connection (a file, the logger)
count as connected.

An output is also unhealthy while it is stalled: events wait in its
buffer and it has delivered nothing for its ``stall_after`` seconds (60
by default), counted from its last confirmed batch or from when its
buffer last stopped being empty, whichever is later.  A destination that
refuses every write, or a write that fails again and again, shows here
instead of stalling the output in silence; an idle output with an empty
buffer is never stalled.  The detail shows ``stalled``,
``seconds_since_delivery`` and ``last_error``.  ``/health`` needs no
token.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from duct.web.responses import LeafResource, jsonBody

HIGH_WATER = 0.8
"""The fraction of a buffer's bounds above which a disconnected output is unhealthy."""


def outputHealth(output: Any) -> tuple[bool, dict[str, Any]]:
    """Whether ``output`` is healthy, and what that was judged on."""
    buffer = output.buffer
    fill = max(buffer.depth / buffer.maxsize, buffer.nbytes / buffer.max_bytes)
    connected = output.connected is not False
    stalled = bool(getattr(output, "stalled", False))
    since = getattr(output, "secondsSinceDelivery", None)
    detail: dict[str, Any] = {
        "connected": output.connected,
        "buffer_events": buffer.depth,
        "buffer_bytes": buffer.nbytes,
        "buffer_fill": round(fill, 4),
        "stalled": stalled,
        "seconds_since_delivery": None if since is None else round(since, 3),
        "last_error": getattr(output, "lastError", None),
    }
    return (connected or fill < HIGH_WATER) and not stalled, detail


def outputReasons(name: str, output: Any, detail: dict[str, Any]) -> list[str]:
    """Why an unhealthy output is unhealthy, one line per rule it breaks."""
    reasons = []
    if output.connected is False and detail["buffer_fill"] >= HIGH_WATER:
        reasons.append(
            f"output {name}: not connected, and its buffer is "
            f"{detail['buffer_fill']:.0%} full ({detail['buffer_events']} of "
            f"{output.buffer.maxsize} events, {detail['buffer_bytes']} of "
            f"{output.buffer.max_bytes} bytes)"
        )
    if detail["stalled"]:
        error = detail["last_error"]
        reasons.append(
            f"output {name}: stalled: {detail['buffer_events']} events waiting, "
            f"nothing delivered for {detail['seconds_since_delivery']:.0f} s"
            + (f" (last error: {error})" if error else "")
        )
    return reasons


def health(service: Any) -> tuple[bool, dict[str, Any]]:
    """``(healthy, body)`` for ``service``: each listener's and output's detail, and reasons."""
    outputs: dict[str, Any] = {}
    reasons: list[str] = []
    listeners: list[dict[str, Any]] = []
    for source in list(service.sources):
        if not getattr(source, "listens", False):
            continue
        down = getattr(source, "down", None)
        address = getattr(source, "address", None)
        detail = {"source": source.service, "address": address, "listening": down is None}
        if down is not None:
            detail["down"] = down
            reasons.append(f"source {source.service}: {down}")
        listeners.append(detail)
    for name, output in dict(service.outputs).items():
        ok, detail = outputHealth(output)
        outputs[name] = detail
        if not ok:
            reasons.extend(outputReasons(name, output, detail))
    body: dict[str, Any] = {"status": "unhealthy" if reasons else "ok", "outputs": outputs}
    if listeners:
        body["listeners"] = listeners
    if reasons:
        body["reasons"] = reasons
    return not reasons, body


class HealthResource(LeafResource):
    """Answers GET with 200 or 503 and the JSON of `health`."""

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        ok, body = health(self.service)
        return jsonBody(request, body, 200 if ok else 503)
