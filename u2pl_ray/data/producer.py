"""Worker-side plumbing of the stream: rows -> samples (decoded here or in Ray), samples -> batches of
exactly the size asked for, produced ahead of the training loop in a background thread."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from u2pl_ray.data.errors import BadSampleError, DataError
from u2pl_ray.data.rows import RowSpec, View, process_row, row_where, view_rngs


@dataclass
class Item:
    image: torch.Tensor  # uint8 [3, c, c]
    mask: torch.Tensor  # uint8 [c, c]: labels, or an unlabelled view's padding mask (255 = padded)
    id: str
    position: int  # plan position (deterministic mode) or running count
    extra: tuple[View, ...] = ()  # further views of the same image (RowSpec.views > 1)


@dataclass
class StackedBatch:
    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    entries: int  # plan entries consumed so far this epoch (resume point)
    padded: int
    extra_images: tuple[torch.Tensor, ...] = ()  # one [B, 3, c, c] per further view
    extra_masks: tuple[torch.Tensor, ...] = ()


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.skipped = 0
        self.padded = 0

    def add(self, skipped: int = 0, padded: int = 0) -> None:
        with self.lock:
            self.skipped += skipped
            self.padded += padded


def items_from_batches(
    batches: Iterable[dict[str, np.ndarray]],
    spec: RowSpec,
    *,
    epoch: int,
    stream: int,
    on_bad_sample: str,
    counters: Counters,
    pool: ThreadPoolExecutor | None,
    position_base: int,
) -> Iterator[Item]:
    """Samples in row order. Rows arrive raw (decoded here, in `pool`) or decoded by Ray (`error` column).
    Bad rows raise BadSampleError or are counted and dropped, per `on_bad_sample`."""
    count = 0
    for batch in batches:
        n = len(batch["id"])
        if n == 0:
            continue
        positions = batch.get("position")
        if positions is None:  # Ray Train's split: no plan, number rows as they come
            positions = np.arange(position_base + count, position_base + count + n)
        count += n
        if "error" in batch:
            results = list(_from_decoded(batch, positions))
        else:
            results = _decode_here(batch, positions, spec, epoch, stream, pool)
        for result in results:
            if isinstance(result, BadSampleError):
                if on_bad_sample == "error":
                    raise result
                counters.add(skipped=1)
                continue
            yield result


def _from_decoded(batch: dict[str, np.ndarray], positions: np.ndarray) -> Iterator[Item | BadSampleError]:
    """Items of rows decoded in Ray tasks (columns of `rows.decode_rows_to_numpy`)."""
    views = 1 + sum(1 for key in batch if key.startswith("image_"))

    def tensor(key: str, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(batch[key][i]))

    for i in range(len(batch["id"])):
        if batch["error"][i]:
            yield BadSampleError(str(batch["error"][i]))
            continue
        extra = tuple((tensor(f"image_{v}", i), tensor(f"mask_{v}", i)) for v in range(1, views))
        yield Item(tensor("image", i), tensor("mask", i), str(batch["id"][i]), int(positions[i]), extra)


def _decode_here(
    batch: dict[str, np.ndarray],
    positions: np.ndarray,
    spec: RowSpec,
    epoch: int,
    stream: int,
    pool: ThreadPoolExecutor | None,
) -> list[Item | BadSampleError]:
    masks = batch.get("mask")

    def one(i: int) -> Item | BadSampleError:
        where = row_where(batch["where"][i], batch["id"][i])
        try:
            views = process_row(
                spec,
                batch["image"][i],
                masks[i] if masks is not None else None,
                batch["height"][i],
                batch["width"][i],
                where,
                view_rngs(spec, epoch, stream, int(positions[i])),
            )
        except BadSampleError as exc:
            return exc
        (img, msk), extra = views[0], tuple(views[1:])
        return Item(img, msk, str(batch["id"][i]), int(positions[i]), extra)

    if pool is None:
        return [one(i) for i in range(len(batch["id"]))]
    return list(pool.map(one, range(len(batch["id"]))))


def batches_of(
    items: Iterator[Item], batch_size: int, count: int, counters: Counters, position_base: int, stop: threading.Event
) -> Iterator[StackedBatch]:
    """Exactly `count` batches. The streams are sized to cover the epoch (`stream_repeats`), so items run
    short only when rows were skipped as bad; the missing places are then filled by cycling through the
    samples delivered last, in order, as DistributedSampler pads (a running index, so successive padded
    batches differ). An empty stream is an error."""
    recent: deque[Item] = deque(maxlen=max(16 * batch_size, 64))
    entries = 0
    exhausted = False
    cursor = 0  # padding position, kept across batches
    for _ in range(count):
        chosen: list[Item] = []
        padded = 0
        while len(chosen) < batch_size and not stop.is_set():
            item = None if exhausted else next(items, None)
            if item is None:
                exhausted = True
                if not recent:
                    raise DataError(
                        "the stream delivered no usable sample this epoch (too few rows for this "
                        "worker, or all of them skipped as bad)"
                    )
                item = recent[cursor % len(recent)]
                cursor += 1
                padded += 1
            else:
                recent.append(item)
                entries = item.position - position_base + 1
            chosen.append(item)
        if stop.is_set():
            return
        counters.add(padded=padded)
        images = torch.stack([it.image for it in chosen])
        masks = torch.stack([it.mask for it in chosen])
        extra = range(len(chosen[0].extra))
        yield StackedBatch(
            images,
            masks,
            [it.id for it in chosen],
            entries,
            padded,
            tuple(torch.stack([it.extra[v][0] for it in chosen]) for v in extra),
            tuple(torch.stack([it.extra[v][1] for it in chosen]) for v in extra),
        )


_END = object()


class Producer:
    """Runs `make(stop)` (a generator) in a thread, `depth` results ahead of the consumer."""

    def __init__(self, make: Callable[[threading.Event], Iterator], depth: int, name: str):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._make = make
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        gen = None
        try:
            gen = self._make(self._stop)
            for item in gen:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            if gen is not None and hasattr(gen, "close"):
                gen.close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> StackedBatch:
        item = self._queue.get()
        if item is _END:
            raise DataError("internal: the stream ended before the epoch did")
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
                timeout_s -= 0.05
                if timeout_s <= 0:
                    break
