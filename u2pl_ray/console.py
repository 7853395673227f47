"""Progress bars for the command-line tools (evaluate, predict, convert): tqdm on stderr, shown on a
terminal only, so that logs and captured output stay clean."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def bar(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "img") -> Iterator[T]:
    from tqdm import tqdm

    yield from tqdm(
        items, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True
    )
