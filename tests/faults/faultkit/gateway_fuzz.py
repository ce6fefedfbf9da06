"""Fault 7, long version: fuzz a running gateway process from its OpenAPI description.

The same generation as ``tests/test_gateway_fuzz.py`` (schemathesis, every operation,
valid and invalid cases, the token sent) but over real HTTP to ``rotwatch gateway
run``, with more examples per operation. Used by ``bench/faults.py``.
"""
from __future__ import annotations

import collections

from faultkit.outcome import Outcome

__all__ = ["fuzz_gateway"]


def fuzz_gateway(gateway, examples: int = 200) -> Outcome:
    import schemathesis
    from hypothesis import HealthCheck, given, settings as hsettings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    out = Outcome("7 gateway fuzzed over HTTP", "no generated request gets a 5xx")
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    statuses: collections.Counter = collections.Counter()
    failures = []
    for mode in ("positive", "negative"):
        for result in schema.get_all_operations():
            operation = result.ok()
            strategy = operation.as_strategy(GenerationMode(mode))

            @given(case=strategy)
            @hsettings(max_examples=examples, deadline=None, derandomize=True,
                       database=None, suppress_health_check=list(HealthCheck))
            def fuzz(case):
                response = case.call(headers=gateway.auth, timeout=30)
                statuses[response.status_code // 100] += 1
                if response.status_code >= 500:
                    failures.append(f"{operation.label}: {response.status_code} "
                                    f"{response.text[:120]}")

            try:
                fuzz()
            except Unsatisfiable:
                pass   # nothing to negate (no parameters, no body)
    out.counts.update(requests=sum(statuses.values()),
                      by_class={f"{k}xx": v for k, v in sorted(statuses.items())},
                      server_errors=len(failures), alive=gateway.proc.alive)
    out.check("no 5xx from fuzzing", not failures and gateway.proc.alive,
              f"{sum(statuses.values())} generated requests, by class "
              f"{out.counts['by_class']}; 5xx: {failures[:3] or 'none'}")
    return out
