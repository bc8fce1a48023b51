"""Property-based fuzzing of the OpenAPI schema against a real `qwythos serve` (schemathesis): whatever body
the schema admits — and the negative cases schemathesis derives from it — the server never answers 5xx.

Requests carry the served model's real name, so they get past the model check into the handlers; the number
of examples per operation is bounded to keep the suite fast.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from serving import AUTH, Server, tiny_model_dir

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    s = Server(tiny_model_dir(tmp_path_factory.mktemp("fuzz")), "--max-total-tokens", "256")
    yield s
    s.stop()


def operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=AUTH)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_body_the_schema_admits_gets_a_server_error(fuzz_server):
    """Each operation of /openapi.json, MAX_EXAMPLES generated cases (positive and negative)."""
    ops = operations(fuzz_server.url)
    assert {op.path for op in ops} >= {"/v1/completions", "/v1/chat/completions", "/tokenize"}
    seen = {}

    for op in ops:

        @given(
            case=op.as_strategy(generation_mode=GenerationMode.POSITIVE)
            | op.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def call(case):
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = fuzz_server.model_name  # reach the handlers, not the model check
            response = case.call(headers=AUTH, timeout=60)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (
                f"{case.method} {case.path} {case.body!r}: {response.status_code} {response.text[:500]}"
            )
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]

        call()
    assert seen.get(200, 0) > 0 and sum(v for k, v in seen.items() if 400 <= k < 500) > 0, seen
