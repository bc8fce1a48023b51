"""Continuous batching: one thread decodes every running request; new requests join between steps.

Requests with the same routing (mode, force, temperature) share a ``DecodeBatch``; each loop admits waiting
requests into their batch (prefill), then decodes one token for every batch. The waiting queue is bounded:
``submit`` raises ``QueueFull`` instead of growing without limit. ``stop`` lets running and waiting
requests finish (graceful shutdown) or cancels them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..model.block import Routing
from .engine import Completion, DecodeBatch, Engine, Request

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The waiting queue is at its bound; retry later."""


@dataclass
class Job:
    """A submitted request: ``done`` is set when ``completion`` (or ``error``) is ready."""

    request: Request
    routing: Routing
    on_done: Callable[[Job], None] | None = None
    completion: Completion | None = None
    error: BaseException | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None  # perf_counter time of the first generated token
    done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.request.cancelled = True

    def wait(self, timeout: float | None = None) -> Completion:
        if not self.done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if self.error is not None:
            raise self.error
        return self.completion


def _key(r: Routing) -> tuple:
    return (r.mode, r.force, r.temperature)


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int = 8, max_queue: int = 64, trace: bool = True):
        self.engine, self.max_batch, self.max_queue, self.trace = engine, max_batch, max_queue, trace
        self._waiting: deque[Job] = deque()
        self._running: dict[tuple, tuple[DecodeBatch, dict[int, Job]]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # ------------------------------------------------------------ used from any thread

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name="qwythos-scheduler", daemon=True)
        self._thread.start()
        return self

    def submit(self, jobs: list[Job]) -> list[Job]:
        """Queue these jobs together (all or none): QueueFull if they do not fit, RuntimeError after stop."""
        for j in jobs:
            self.engine.check(j.request)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_queue})")
            self._waiting.extend(jobs)
            self._cond.notify()
        return jobs

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return sum(len(b) for b, _ in self._running.values())

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with drain, finish every queued and running one first, else cancel them."""
        with self._cond:
            self._stopping = True
            if not drain:
                for j in self._waiting:
                    j.cancel()
                for _, jobs in self._running.values():
                    for j in jobs.values():
                        j.cancel()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------ the decoding thread

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._waiting and not self._running and not self._stopping:
                        self._cond.wait()
                    if self._stopping and not self._waiting and not self._running:
                        return
                    admit = self._admit()
                for key, jobs in admit.items():
                    self._prefill(key, jobs)
                for key in list(self._running):
                    self._step(key)
                self.steps += 1

    def _admit(self) -> dict[tuple, list[Job]]:
        """Waiting jobs that fit in the running batches, grouped by routing (called with the lock)."""
        room = self.max_batch - self.running
        out: dict[tuple, list[Job]] = {}
        while self._waiting and room > 0:
            j = self._waiting.popleft()
            out.setdefault(_key(j.routing), []).append(j)
            room -= 1
        return out

    def _prefill(self, key: tuple, jobs: list[Job]) -> None:
        live = [j for j in jobs if not j.request.cancelled]
        for j in jobs:
            if j.request.cancelled:
                self._finish(j, Completion([], "", "abort", None, len(j.request.prompt_ids)))
        if not live:
            return
        if key not in self._running:
            self._running[key] = (DecodeBatch(self.engine, live[0].routing, self.trace), {})
        batch, by_row = self._running[key]
        for j in live:
            self._watch_first_token(j)
        try:
            rows = batch.add([j.request for j in live])
        except Exception as e:  # noqa: BLE001 - a failed prefill fails its own requests, not the server
            log.exception("prefill failed")
            for j in live:
                self._finish(j, error=e)
            return
        for row, j in zip(rows, live, strict=True):
            by_row[id(row)] = j
        self._collect(key)

    def _step(self, key: tuple) -> None:
        batch, _ = self._running[key]
        try:
            batch.step()
        except Exception as e:  # noqa: BLE001
            log.exception("decode step failed")
            _, jobs = self._running.pop(key)
            for j in jobs.values():
                self._finish(j, error=e)
            return
        self._collect(key)

    def _collect(self, key: tuple) -> None:
        batch, by_row = self._running[key]
        for row in batch.collect():
            self._finish(by_row.pop(id(row)), row.completion(self.trace))
        if not batch.rows:
            del self._running[key]

    def _watch_first_token(self, j: Job) -> None:
        r = j.request
        inner = r.on_event

        def on_event(ev) -> None:
            if j.first_token is None:
                j.first_token = time.perf_counter()
            if inner is not None:
                inner(ev)

        r.on_event = on_event

    def _finish(self, j: Job, completion: Completion | None = None, error: BaseException | None = None):
        j.completion, j.error = completion, error
        j.done.set()
        if j.on_done is not None:
            try:
                j.on_done(j)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the decoding thread
                log.exception("on_done callback failed")
