"""Score a Redis Stream in micro-batches with the champion, at least once.

Producers XADD one entry per record, one field per column. Consumers of one group share the
stream; each entry is acknowledged only in the same MULTI/EXEC as its result's XADD to the output
stream (or, rejected, to the dead-letter stream with its reasons), and only after the scored rows
reached the store. A consumer that dies mid-batch leaves its entries pending; any consumer takes
them over (XAUTOCLAIM) once idle for `claim_idle_ms`.
Rows can reach the store twice after a crash (at least once): `event_id` identifies them.
When Redis goes away (a restart), the consumer waits and reconnects with exponential backoff,
then reads its own pending entries first, so a batch cut off before its acknowledgement is
finished before any new one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import redis

from ..config import PipelineConfig
from ..scoring import provenance
from ..errors import DataError
from ..data.io import write_table
from ..scoring.files import append_to_store, load_model, score_frame
from ..tracking.champion import champion_version_uri
from ..tracking.store import setup
from ..data.validation import ERRORS_COLUMN

EVENT_ID = "event_id"
# Reconnection backoff: first wait, longest wait, and how long Redis may stay away before the consumer gives up.
BACKOFF_FIRST_S, BACKOFF_MAX_S, GIVE_UP_AFTER_S = 0.1, 5.0, 600.0
log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    n_events: int
    n_scored: int
    n_rejected: int
    n_anomalies: int
    first_id: str
    last_id: str


class StreamScorer:
    def __init__(self, cfg: PipelineConfig, consumer: str | None = None):
        self.cfg, self.options = cfg, cfg.monitoring.stream
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        # Bytes, decoded entry by entry: one event that is not UTF-8 goes to the dead-letter stream
        # instead of failing the whole read.
        self.redis = redis.Redis.from_url(self.options.redis_url)
        setup(cfg.tracking)
        self.model_uri = champion_version_uri(cfg.registry.model_name)
        self.model = load_model(self.model_uri, cfg.tracking)
        self.record = provenance.describe(self.model_uri, self.model.unwrap_python_model())  # kept in each file it writes
        self.store = Path(cfg.monitoring.scored_dir) / "stream"
        self._recovered = False
        try:
            self.redis.xgroup_create(self.options.input, self.options.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read(self) -> list[tuple[bytes, dict | None]]:
        """This consumer's own unacknowledged entries first, then stalled ones of others, then new ones."""
        o = self.options
        if not self._recovered:
            own = self.redis.xreadgroup(o.group, self.consumer, {o.input: "0"}, count=o.batch_size)
            entries = own[0][1] if own else []
            if entries:
                return entries
            self._recovered = True
        _, claimed, _ = self.redis.xautoclaim(o.input, o.group, self.consumer, o.claim_idle_ms, "0-0", count=o.batch_size)
        if claimed:
            return claimed
        new = self.redis.xreadgroup(o.group, self.consumer, {o.input: ">"}, count=o.batch_size, block=o.block_ms or None)
        return new[0][1] if new else []

    def process(self, entries: list[tuple[bytes, dict | None]]) -> BatchResult:
        """Validate and score one micro-batch, write it to the store, its results to the output
        stream and its rejected events to the dead-letter stream, then acknowledge every entry."""
        ids = [entry_id.decode() for entry_id, _ in entries]
        records, dead = [], {}  # dead: event id -> (fields as given, reasons)
        for event_id, (_, fields) in zip(ids, entries):
            if fields is None:
                dead[event_id] = ({}, "deleted from the input stream before it was scored")
                continue
            try:
                records.append({key.decode(): value.decode() for key, value in fields.items()} | {EVENT_ID: event_id})
            except UnicodeDecodeError as err:
                dead[event_id] = (fields, f"not UTF-8 text: {err.reason} (byte {err.object[err.start:err.end]!r})")
        scored = pd.DataFrame()
        if records:
            frame = pd.DataFrame(records)
            try:
                result, scored = score_frame(self.model, frame, source=f"stream {self.options.input}")
                rejected = result.rejected
            except DataError as err:  # the whole micro-batch is unusable (e.g. a column missing from every event)
                rejected = frame.assign(**{ERRORS_COLUMN: str(err)})
            fields_of = dict(zip(ids, (fields for _, fields in entries)))
            dead |= {event_id: (fields_of[event_id], errors) for event_id, errors in zip(rejected[EVENT_ID], rejected[ERRORS_COLUMN])}
        id_column = self.cfg.data.id_column
        if len(scored):
            write_table(scored, self.store / f"{ids[0].replace('-', '_')}-{ids[-1].replace('-', '_')}.parquet", provenance.metadata(self.record))
            if self.cfg.monitoring.store_url:
                append_to_store(scored.assign(model_uri=self.model_uri), self.cfg.monitoring.store_url, self.cfg.monitoring.store_table)
        with self.redis.pipeline(transaction=True) as pipe:
            for row in scored.itertuples(index=False):
                out = {EVENT_ID: getattr(row, EVENT_ID), "score": repr(float(row.score)), "is_anomaly": int(row.is_anomaly), "model": self.model_uri}
                if id_column and id_column in scored.columns:
                    out["id"] = str(getattr(row, id_column))
                pipe.xadd(self.options.output, out)
            for event_id, (fields, errors) in dead.items():
                pipe.xadd(self.options.dead_letter, {**fields, EVENT_ID: event_id, ERRORS_COLUMN: errors})
            pipe.xack(self.options.input, self.options.group, *ids)
            pipe.execute()
        n_anomalies = int(scored["is_anomaly"].sum()) if len(scored) else 0
        return BatchResult(len(ids), len(scored), len(dead), n_anomalies, ids[0], ids[-1])

    def run(self, max_batches: int | None = None, idle_exit: bool = False, on_batch=None) -> dict:
        """Consume until interrupted, `max_batches` micro-batches, or (with `idle_exit`) an empty read."""
        totals = {"batches": 0, "events": 0, "scored": 0, "rejected": 0, "anomalies": 0}
        started = time.perf_counter()
        outage, failures = None, 0  # when Redis became unreachable, failed attempts since
        while max_batches is None or totals["batches"] < max_batches:
            try:
                entries = self.read()
                batch = self.process(entries) if entries else None
            except (redis.ConnectionError, redis.TimeoutError) as err:
                outage, failures = outage or time.monotonic(), failures + 1
                self._wait_for_redis(err, failures, time.monotonic() - outage)
                continue
            outage, failures = None, 0
            if batch is None:
                if idle_exit:
                    break
                continue
            totals["batches"] += 1
            for key, value in (("events", batch.n_events), ("scored", batch.n_scored), ("rejected", batch.n_rejected), ("anomalies", batch.n_anomalies)):
                totals[key] += value
            if on_batch:
                on_batch(batch)
        totals["seconds"] = round(time.perf_counter() - started, 3)
        return totals

    def _wait_for_redis(self, err: Exception, failures: int, down_s: float) -> None:
        if down_s > GIVE_UP_AFTER_S:
            raise redis.ConnectionError(f"Redis at {self.options.redis_url} unreachable for {down_s:.0f} s: {err}") from err
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
        log.warning("Redis at %s unreachable (%s); retrying in %.1f s", self.options.redis_url, err, delay)
        time.sleep(delay)
        self._recovered = False  # a batch cut off before its acknowledgement is still pending: take it first
