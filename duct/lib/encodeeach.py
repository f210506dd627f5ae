"""Encoding items one by one, so that one item that cannot be encoded is found.

`encodeEach` encodes a whole list in one comprehension, the common case;
only when that raises does it encode item by item to learn which ones fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["describeError", "encodeEach"]

T = TypeVar("T")
R = TypeVar("R")


def encodeEach(
    items: Sequence[T], encode: Callable[[T], R]
) -> tuple[list[R], list[int], Exception | None]:
    """``(encoded, failed, error)``: what encodes, the indices of what does not, the first error.

    ``encoded`` holds the results of the items that encoded, in order; it
    is every item's when ``failed`` is empty.  ``error`` is the first
    exception raised, or None.
    """
    try:
        return [encode(item) for item in items], [], None
    except Exception:
        pass
    encoded: list[R] = []
    failed: list[int] = []
    first: Exception | None = None
    for index, item in enumerate(items):
        try:
            encoded.append(encode(item))
        except Exception as e:
            failed.append(index)
            if first is None:
                first = e
    return encoded, failed, first


def describeError(error: BaseException | None) -> str:
    """A short text for ``error``: its type and message."""
    if error is None:
        return "no error given"
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name
