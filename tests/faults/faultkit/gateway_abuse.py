"""Fault 7: a running ``rotwatch gateway run`` abused over real HTTP.

``tests/test_gateway_fuzz.py`` fuzzes every operation of the OpenAPI description
in-process (no 5xx); this scenario checks, against the real server process and its
sockets, what the fuzzer cannot reach that way:

* **oversize** bodies — a declared ``Content-Length`` over the limit (answered before
  the body is read), and a chunked body without a length that passes it;
* **floods** — of instances in one request, of events in one feedback request, of
  nesting in one JSON body, of header bytes, and of concurrent requests;
* **auth** — where a token is configured, the feedback and admin routes refuse
  missing, wrong and non-bearer credentials, and accept the token; predictions and
  reads stay open.

Every answer is counted by status class: none may be 5xx, the process must still be
alive and healthy at the end, and its log must hold no unhandled error.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import threading
import time

from faultkit.gateway_proc import raw_request
from faultkit.outcome import Outcome

__all__ = ["gateway_abuse", "INVARIANT", "LIMIT_BYTES"]

INVARIANT = ("A running gateway answers no request with a 5xx: oversize bodies and "
             "floods of instances/events/nesting/headers are refused with 4xx, "
             "concurrent floods are served, and the token is enforced on feedback and "
             "admin routes where configured.")
# The gateway's default body limit (publishers/gateway/limits.py).
LIMIT_BYTES = 1_500_000
INSTANCE = [2.0, 3.4, 5.1, 1.0]


def _head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def gateway_abuse(gateway, model: str, flood_requests: int = 400,
                  flood_threads: int = 8) -> Outcome:
    import httpx

    out = Outcome("7 gateway abuse over HTTP", INVARIANT)
    c = out.counts
    statuses: collections.Counter = collections.Counter()
    cases: dict[str, int] = {}
    http = httpx.Client(base_url=gateway.url, timeout=60.0)

    seconds: dict[str, float] = {}
    clock = [time.monotonic()]

    def record(name: str, status: int) -> int:
        cases[name] = status
        seconds[name] = round(time.monotonic() - clock[0], 2)
        clock[0] = time.monotonic()
        statuses[status // 100] += 1
        return status

    def post(name, path, body=None, headers=None, content=None) -> int:
        clock[0] = time.monotonic()
        try:
            response = http.post(path, json=body, content=content, headers=headers)
        except httpx.HTTPError as exc:   # the server dropped the connection
            cases[name] = f"{type(exc).__name__}"
            statuses["dropped"] += 1
            return 0
        return record(name, response.status_code)

    one = {"instances": [INSTANCE], "model": model}
    # -- oversize -----------------------------------------------------------------
    clock[0] = time.monotonic()
    record("oversize: declared length", raw_request(gateway.port, _head(
        "/v1/predict", f"Content-Length: {2 * LIMIT_BYTES}\r\n")))
    chunk = b" " * 65536
    chunks = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * (LIMIT_BYTES // len(chunk) + 4)
    clock[0] = time.monotonic()
    record("oversize: chunked, no length", raw_request(gateway.port, _head(
        "/v1/feedback", f"Transfer-Encoding: chunked\r\nAuthorization: Bearer "
                        f"{gateway.token}\r\n"), chunks + [b"0\r\n\r\n"]))
    # -- floods -------------------------------------------------------------------
    post("flood: 1,001 instances", "/v1/predict",
         {"instances": [INSTANCE] * 1001, "model": model})
    post("flood: 60,000 instances under the byte limit", "/v1/predict",
         {"instances": [INSTANCE] * 60_000, "model": model})
    post("flood: 501 feedback events", "/v1/feedback",
         [{"prediction_id": f"p{i}", "was_correct": True} for i in range(501)],
         headers=gateway.auth)
    depth = 200_000
    post("flood: JSON nested 200,000 deep", "/v1/predict",
         content=b'{"model": "' + model.encode() + b'", "instances": ' + b"[" * depth
         + b"]" * depth + b"}", headers={"Content-Type": "application/json"})
    post("flood: 2,001 features per instance", "/v1/predict",
         {"instances": [[1.0] * 2001], "model": model})
    post("odd: 60 KB header", "/v1/predict", one, headers={"X-Fill": "x" * 60_000})
    # -- auth ---------------------------------------------------------------------
    clock[0] = time.monotonic()
    predict = http.post("/v1/predict", json=one)
    record("auth: predict without a token", predict.status_code)
    pid = predict.json()["prediction_ids"][0] if predict.status_code == 200 else "none"
    feedback = {"prediction_id": pid, "was_correct": True}
    post("auth: feedback without a token", "/v1/feedback", feedback)
    post("auth: feedback with a wrong token", "/v1/feedback", feedback,
         headers={"Authorization": "Bearer " + "w" * 32})
    post("auth: feedback with Basic credentials", "/v1/feedback", feedback,
         headers={"Authorization": f"Basic {gateway.token}"})
    post("auth: setDefault without a token", f"/v1/models/{model}:setDefault",
         {"version": "v1"})
    post("auth: setDefault with a wrong token", f"/v1/models/{model}:setDefault",
         {"version": "v1"}, headers={"Authorization": "Bearer " + "w" * 32})
    post("auth: feedback with the token", "/v1/feedback", feedback, headers=gateway.auth)
    post("auth: setDefault with the token", f"/v1/models/{model}:setDefault",
         {"version": "v1", "reason": "fault suite"}, headers=gateway.auth)
    record("auth: list models without a token", http.get("/v1/models").status_code)

    # -- a concurrent flood of ordinary requests ----------------------------------
    local = threading.local()
    opened = []

    def hit(i: int) -> int:
        own = getattr(local, "client", None)
        if own is None:   # one keep-alive connection per flooding thread
            own = local.client = httpx.Client(base_url=gateway.url, timeout=60.0)
            opened.append(own)
        if i % 4 == 3:
            return own.post("/v1/feedback", json={"model": model, "version": "v1",
                            "features": INSTANCE, "prediction": 1, "was_correct": True,
                            "event_id": f"flood-{i}"}, headers=gateway.auth).status_code
        return own.post("/v1/predict", json={"instances": [INSTANCE] * 50,
                                             "model": model}).status_code
    with concurrent.futures.ThreadPoolExecutor(flood_threads) as pool:
        flood = collections.Counter(pool.map(hit, range(flood_requests)))
    for own in opened:
        own.close()
    for status, n in flood.items():
        statuses[status // 100] += n
    c["flood_statuses"] = dict(flood)

    healthy = http.get("/healthz").status_code
    record("health after the abuse", healthy)
    http.close()
    unhandled = gateway.proc.matching(r"unhandled error|Traceback")
    c["cases"] = cases
    c["case_seconds"] = seconds
    c["status_classes"] = {f"{k}xx" if isinstance(k, int) else k: v
                           for k, v in sorted(statuses.items(), key=str)}
    c["server_errors"] = statuses[5]
    c["unhandled_errors_logged"] = len(unhandled)
    c["alive"] = gateway.proc.alive

    oversize = {k: v for k, v in cases.items() if k.startswith("oversize")}
    floods = {k: v for k, v in cases.items() if k.startswith("flood")}
    out.check("no 5xx", statuses[5] == 0 and statuses["dropped"] == 0,
              f"answers by class {json.dumps(c['status_classes'])}")
    out.check("oversize refused with 413", set(oversize.values()) == {413},
              json.dumps(oversize))
    out.check("floods refused with 4xx",
              all(isinstance(v, int) and 400 <= v < 500 for v in floods.values()),
              json.dumps(floods))
    auth = {k: v for k, v in cases.items() if k.startswith("auth")}
    refused = [v for k, v in auth.items()
               if ("without" in k or "wrong" in k or "Basic" in k) and "predict" not in k
               and "list" not in k]
    allowed = [auth["auth: predict without a token"], auth["auth: feedback with the token"],
               auth["auth: setDefault with the token"],
               auth["auth: list models without a token"]]
    out.check("auth enforced where configured",
              set(refused) == {401} and all(200 <= v < 300 for v in allowed),
              json.dumps(auth))
    out.check("concurrent flood served",
              sum(n for s, n in flood.items() if 200 <= s < 300) == flood_requests,
              f"{flood_requests} requests over {flood_threads} connections: "
              f"{json.dumps(dict(flood))}")
    out.check("process healthy", c["alive"] and healthy == 200 and not unhandled,
              f"alive {c['alive']}, /healthz {healthy}, unhandled errors logged "
              f"{len(unhandled)}{': ' + unhandled[0][:200] if unhandled else ''}")
    return out
