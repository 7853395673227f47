"""Errors of the data layer. Each message names the culprit: the URI, the shard and the row id."""

from __future__ import annotations


class DataError(RuntimeError):
    """A dataset, shard, manifest or storage location that cannot be used as it is."""


class BadSampleError(DataError):
    """One sample that cannot be decoded or fails a check (corrupt bytes, size mismatch, bad class ids)."""

    def __init__(self, where: str, problem: str = ""):
        # With only `where`, it is the whole message (an error that crossed a process boundary as text).
        super().__init__(f"bad sample {where}: {problem}" if problem else where)
        self.where = where
        self.problem = problem

    def __reduce__(self):
        return (type(self), (self.where, self.problem))
