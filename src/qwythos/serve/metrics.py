"""Server metrics in the Prometheus text format (version 0.0.4), kept in memory.

Requests by route and status, prompt and generated tokens, queue depth and running requests, request
latency and time to first token (histograms), and pathway usage: generated tokens by dominant pathway and
the sum of gate weights per pathway.
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total, self.n = 0.0, 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(BUCKETS):
            if value <= b:
                self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(BUCKETS, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        braces = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.n}"]


class Metrics:
    def __init__(self, pathways: list[str]):
        self.pathways = pathways
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.ttft = Histogram()
        self.finished: dict[str, int] = defaultdict(int)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.pathway_tokens = dict.fromkeys(pathways, 0)
        self.pathway_gate = dict.fromkeys(pathways, 0.0)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency[route].observe(seconds)

    def generation(
        self, prompt_tokens: int, generated: int, ttft: float | None, gates=None, finish_reason: str = "stop"
    ) -> None:
        """One finished generation; gates: (n, P) per-token gate (mean over layers), or None."""
        with self._lock:
            self.finished[finish_reason] += 1
            self.prompt_tokens += prompt_tokens
            self.generation_tokens += generated
            if ttft is not None:
                self.ttft.observe(ttft)
            if gates is not None and len(gates):
                for p, count in zip(
                    self.pathways,
                    gates.argmax(-1).bincount(minlength=len(self.pathways)).tolist(),
                    strict=True,
                ):
                    self.pathway_tokens[p] += int(count)
                for p, total in zip(self.pathways, gates.sum(0).tolist(), strict=True):
                    self.pathway_gate[p] += total

    def render(self, waiting: int, running: int) -> str:
        with self._lock:
            out = [
                "# HELP qwythos_requests_total HTTP requests by route and status.",
                "# TYPE qwythos_requests_total counter",
            ]
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'qwythos_requests_total{{route="{route}",status="{status}"}} {n}')
            out += [
                "# HELP qwythos_prompt_tokens_total Prompt tokens processed.",
                "# TYPE qwythos_prompt_tokens_total counter",
                f"qwythos_prompt_tokens_total {self.prompt_tokens}",
                "# HELP qwythos_generation_tokens_total Tokens generated.",
                "# TYPE qwythos_generation_tokens_total counter",
                f"qwythos_generation_tokens_total {self.generation_tokens}",
                "# HELP qwythos_finished_total Generations by finish reason (abort = cancelled).",
                "# TYPE qwythos_finished_total counter",
                *(f'qwythos_finished_total{{reason="{r}"}} {n}' for r, n in sorted(self.finished.items())),
                "# HELP qwythos_queue_depth Requests waiting for a batch slot.",
                "# TYPE qwythos_queue_depth gauge",
                f"qwythos_queue_depth {waiting}",
                "# HELP qwythos_running_requests Requests being decoded.",
                "# TYPE qwythos_running_requests gauge",
                f"qwythos_running_requests {running}",
                "# HELP qwythos_request_duration_seconds Request latency by route.",
                "# TYPE qwythos_request_duration_seconds histogram",
            ]
            for route, h in sorted(self.latency.items()):
                out += h.lines("qwythos_request_duration_seconds", f'route="{route}"')
            out += [
                "# HELP qwythos_time_to_first_token_seconds From submission to the first generated token.",
                "# TYPE qwythos_time_to_first_token_seconds histogram",
                *self.ttft.lines("qwythos_time_to_first_token_seconds"),
                "# HELP qwythos_pathway_tokens_total Generated tokens by dominant pathway.",
                "# TYPE qwythos_pathway_tokens_total counter",
                *(
                    f'qwythos_pathway_tokens_total{{pathway="{p}"}} {n}'
                    for p, n in self.pathway_tokens.items()
                ),
                "# HELP qwythos_pathway_gate_total Sum of per-token gate weights by pathway.",
                "# TYPE qwythos_pathway_gate_total counter",
                *(
                    f'qwythos_pathway_gate_total{{pathway="{p}"}} {w:.4f}'
                    for p, w in self.pathway_gate.items()
                ),
            ]
        return "\n".join(out) + "\n"
