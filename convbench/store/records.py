"""The result record: one (problem, kernel) measurement, as stored and as read back.

A record is the JSON object written to a results file; :class:`Record` is
that dict with accessors, so tables, plots, checks and comparisons read a
measurement one way (``rec.median_s``, ``rec.error("rel_l2")``) whatever
fields an older file left out. Non-finite numbers are stored as the strings
``"inf"``/``"nan"`` (strict JSON) and read back as floats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Metrics of ``record["error"]``, in the order tables show them.
ERROR_METRICS = ("rel_l2", "max_abs", "max_rel", "bound_ratio")


def number(value: Any) -> float | None:
    """A record's numeric field as float ("inf"/"nan" strings included), else None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Record(dict):
    """A result record (a ``dict``) with typed accessors.

    ``header_platform`` is the platform fingerprint id of the run header the
    record was written under (:func:`~convbench.store.jsonl.load_run` sets
    it), for records that carry no ``fingerprint`` of their own.
    """

    header_platform: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of a measurement: (descriptor, dir, backend, kernel)."""
        return (self["problem"], self.dir, self["backend"], self["kernel"])

    @property
    def dir(self) -> str:
        """The direction measured; a record from before directions were recorded is ``fwd``."""
        return self.get("dir") or "fwd"

    @property
    def platform(self) -> str | None:
        """Id of the platform it was measured on: its own ``fingerprint`` (a record from a
        Dask worker carries its worker's), else its run header's, else None (unknown)."""
        own = self.get("fingerprint")
        if isinstance(own, dict) and own.get("id"):
            return own["id"]
        return self.header_platform

    @property
    def kernel(self) -> str:
        return self["kernel"]

    @property
    def status(self) -> str | None:
        return self.get("status")

    @property
    def ok(self) -> bool:
        return self.get("status") == "ok"

    @property
    def label(self) -> str:
        """The layer's name, or its descriptor when it has none."""
        return self.get("name") or self["problem"]

    @property
    def repeat(self) -> int:
        return int(self.get("repeat") or 1)

    @property
    def median_s(self) -> float | None:
        """Median time of an ``ok`` record with timings, else None."""
        value = number((self.get("time") or {}).get("median_s"))
        return value if value and self.ok else None

    @property
    def samples_by_round_s(self) -> list[list[float]]:
        """The timed samples of an ``ok`` record, one list per round (a file written
        before rounds existed has one: all its samples)."""
        t = self.get("time") or {}
        if not self.ok:
            return []
        rounds = t.get("samples_by_round_s")
        if rounds:
            return [[float(v) for v in r] for r in rounds]
        return [[float(v) for v in t["times_s"]]] if t.get("times_s") else []

    @property
    def pi95_s(self) -> tuple[float, float] | None:
        """Where a rerun's median will fall with 95% probability (None where the record
        has no prediction interval, such as a file written before they existed)."""
        pi = (self.get("time") or {}).get("pi95_s")
        return (float(pi[0]), float(pi[1])) if pi and self.ok else None

    @property
    def ci95_s(self) -> tuple[float, float] | None:
        """The 95% interval of the median (None where the record has none)."""
        ci = (self.get("time") or {}).get("ci95_s")
        return (float(ci[0]), float(ci[1])) if ci and self.ok else None

    @property
    def unstable(self) -> bool:
        """Whether the record's rounds disagree (see ``convbench.measure.stats``)."""
        return bool((self.get("time") or {}).get("unstable")) and self.ok

    @property
    def gflops(self) -> float | None:
        return number(self.get("gflops")) if self.ok else None

    def error(self, metric: str) -> float | None:
        """``rel_l2``, ``max_abs``, ``max_rel``, ``bound_ratio``... of an ``ok`` record."""
        return number((self.get("error") or {}).get(metric)) if self.ok else None

    @property
    def rel_l2(self) -> float | None:
        return self.error("rel_l2")

    @property
    def bound_ratio(self) -> float | None:
        return self.error("bound_ratio")


def by_platform(records: Iterable[dict[str, Any]]) -> dict[str | None, list[Record]]:
    """Records grouped by :attr:`Record.platform`, platforms in first-seen order."""
    groups: dict[str | None, list[Record]] = {}
    for rec in map(as_record, records):
        groups.setdefault(rec.platform, []).append(rec)
    return groups


def as_record(data: dict[str, Any]) -> Record:
    """``data`` as a :class:`Record` (itself if it already is one)."""
    return data if isinstance(data, Record) else Record(data)
