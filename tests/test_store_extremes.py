"""/api/series and /api/services with the largest and smallest floats a store can hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from webhelpers import T0, DirectStore, isFiniteOrNone, point, render, strictJson

from duct.dashboard.api import ApiResource
from duct.outputs.store_db import _mean

BIG = sys.float_info.max


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1e308, 1e308], 1e308),
        ([1e308, 1e308, 1e308], 1e308),
        ([-1e308, -1e308, -1e308], -1e308),
        ([1e308, 1e308, -1e308, 5e-324], 2.5e307),
        ([BIG, BIG, BIG], BIG),
        ([5e-324, 5e-324], 5e-324),
        ([1e308, -1e308], 0.0),
    ],
)
def test_a_bucket_is_averaged_without_overflow(
    tmp_path: Path, values: list[float], expected: float
) -> None:
    store = DirectStore(tmp_path / "store.sqlite")
    # Twice as many points as asked for: one bucket per pair, or all in one bucket.
    store.write([point("x", v, T0 + i) for i, v in enumerate(values)])
    rows = store.db.series("web1", "x", T0, T0 + len(values), 1)
    assert rows is not None
    if len(values) <= 1:
        return
    [(when, mean)] = rows
    assert mean == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert T0 <= when <= T0 + len(values)


def test_the_mean_of_huge_values_stays_finite() -> None:
    assert _mean([BIG] * 7) == pytest.approx(BIG)
    assert _mean([-BIG] * 7) == pytest.approx(-BIG)
    assert _mean([BIG, -BIG, BIG]) == pytest.approx(BIG / 3)


@pytest.mark.parametrize("points", [1, 2, 3, 300])
def test_series_of_extreme_values_answer_200_with_finite_json(tmp_path: Path, points: int) -> None:
    store = DirectStore(tmp_path / "store.sqlite")
    mixture = [1e308, -1e308, 5e-324, 1e308, 1e308, BIG, -BIG, 0.0, -5e-324, 1e308]
    store.write([point("x", v, T0 + i) for i, v in enumerate(mixture * 5)])
    api = ApiResource(store)
    series = api.children[b"series"]
    query = {
        b"host": [b"web1"],
        b"service": [b"x"],
        b"since": [str(T0).encode()],
        b"until": [str(T0 + 50).encode()],
        b"points": [str(points).encode()],
    }
    code, body, _ = render(series, query)
    assert code == 200, body
    answer = strictJson(body)
    assert 0 < len(answer["points"]) <= max(points, 1) or len(mixture * 5) <= points
    assert all(isFiniteOrNone(v) and v is not None for _, v in answer["points"])


def test_services_with_extreme_last_metrics_answer_200(tmp_path: Path) -> None:
    store = DirectStore(tmp_path / "store.sqlite")
    store.write([point("big", 1e308, T0), point("small", 5e-324, T0), point("neg", -BIG, T0)])
    code, body, _ = render(ApiResource(store).children[b"services"], {})
    assert code == 200, body
    metrics = {s["service"]: s["metric"] for s in strictJson(body)["services"]}
    assert metrics == {"big": 1e308, "small": 5e-324, "neg": -BIG}
