"""Fault 6: a model artifact altered after registration.

One byte of a registered ``model.joblib`` is flipped; its sha256 no longer matches the
one the registry recorded. Everywhere an artifact is loaded or put into service the
file must be refused, and the version serving before must keep serving:

* **registry** — :meth:`Registry.load_model` raises ``ArtifactIntegrityError``;
* **gateway** (the ``rotwatch gateway run`` process) — a pinned request gets 409, the
  API's ``setDefault`` is refused (409) and the default does not move; when the
  registry's pointer is moved behind its back (``model-updates``), it keeps serving
  the previous version;
* **registry's default pointer** — ``set_default`` (used by ``rotwatch model
  set-default``, the API and the trainer) must not point the default at a version
  whose artifact fails its check;
* **trainer** — a rot event whose current default is altered ends ``failed`` with no
  new version; a retried job that finds the candidate an earlier attempt registered
  must not promote it once that file is altered: it marks that version ``abandoned``
  (reason recorded) and registers and promotes a fresh one.
"""
from __future__ import annotations

import os
import time
import uuid

from faultkit.outcome import Outcome

__all__ = ["artifact_tampering", "flip_last_byte", "INVARIANT", "INSTANCE"]

INVARIANT = ("An artifact altered after registration is refused everywhere it would be "
             "loaded or put into service (registry load, default pointer, gateway, "
             "trainer) and the previously serving version keeps serving.")
INSTANCE = [2.0, 3.4, 5.1, 1.0]
# How long the gateway gets to hear a model-updates message and act on it.
SWITCH_S = 3.0


def flip_last_byte(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))


def _served(http, model: str) -> str | int:
    response = http.post("/v1/predict", json={"instances": [INSTANCE], "model": model})
    return response.json()["version"] if response.status_code == 200 else \
        response.status_code


def _refused(call) -> tuple[bool, str]:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the refusal is what is checked
        return True, f"{type(exc).__name__}: {str(exc)[:120]}"
    return False, "accepted"


def gateway_and_registry(out: Outcome, gateway, settings, client) -> None:
    import httpx

    from publishers.gateway.testing import register_zombies
    from rotwatch.artifacts import ArtifactIntegrityError
    from rotwatch.registry import Registry

    c = out.counts
    registry = Registry(settings, client=client)       # publishes model-updates
    model = f"tamper{uuid.uuid4().hex[:6]}"
    v1, v2 = register_zombies(registry, model=model)
    http = httpx.Client(base_url=gateway.url, timeout=30.0)
    try:
        c["served_before"] = _served(http, model)
        flip_last_byte(v2.artifact_uri)

        try:
            registry.load_model(model, v2.version)
            c["registry_load"] = "loaded"
        except ArtifactIntegrityError:
            c["registry_load"] = "refused"
        out.check("registry load refused", c["registry_load"] == "refused",
                  f"Registry.load_model of the altered {v2.version}: {c['registry_load']}")

        pinned = http.post("/v1/predict", json={"instances": [INSTANCE],
                                                "model": f"{model}/versions/{v2.version}"})
        api = http.post(f"/v1/models/{model}:setDefault", json={"version": v2.version},
                        headers=gateway.auth)
        c["gateway_pinned"] = pinned.status_code
        c["gateway_set_default"] = api.status_code
        c["default_after_api"] = registry.get_model(model).default_version
        out.check("gateway refuses", pinned.status_code == 409 and api.status_code == 409
                  and c["default_after_api"] == v1.version,
                  f"pinned predict {pinned.status_code}, API setDefault "
                  f"{api.status_code}, registry default still {c['default_after_api']}")

        # a version the gateway already holds in memory, altered afterwards
        v3, _ = register_zombies(registry, model=model, set_default=False)
        warm = http.post("/v1/predict", json={"instances": [INSTANCE],
                                              "model": f"{model}/versions/{v3.version}"})
        flip_last_byte(v3.artifact_uri)
        cached = http.post(f"/v1/models/{model}:setDefault",
                           json={"version": v3.version}, headers=gateway.auth)
        c["gateway_set_default_cached"] = (warm.status_code, cached.status_code)
        if cached.status_code == 200:   # it moved: put it back before going on
            http.post(f"/v1/models/{model}:setDefault", json={"version": v1.version},
                      headers=gateway.auth)

        refused, how = _refused(lambda: registry.set_default(
            model, v2.version, changed_by="person:fault-suite", reason="altered"))
        c["registry_set_default"] = how
        c["default_after_set_default"] = registry.get_model(model).default_version
        out.check("default pointer refuses an altered version", refused
                  and c["default_after_set_default"] == v1.version
                  and cached.status_code == 409,
                  f"Registry.set_default to the altered {v2.version}: {how}, default "
                  f"now {c['default_after_set_default']}; API setDefault to "
                  f"{v3.version}, altered after this gateway loaded it: "
                  f"{cached.status_code}")

        # whatever the pointer says now, the gateway must keep serving v1
        time.sleep(SWITCH_S)
        served = {_served(http, model) for _ in range(20)}
        c["served_after"] = sorted(map(str, served))
        out.check("previous version keeps serving", served == {v1.version},
                  f"served {c['served_before']} before; after the altered version was "
                  f"refused (and the pointer moved: {not refused}): {c['served_after']}")
        if not refused:   # put the pointer back for whoever reads this model next
            registry.set_default(model, v1.version, changed_by="person:fault-suite",
                                 reason="restore after the fault")
    finally:
        http.close()


def trainer(out: Outcome, settings, client) -> None:
    from sklearn.tree import DecisionTreeClassifier

    from rotwatch.registry import Registry
    from test_trainer_service import CONFIG, _deploy_v1, _population, _rot, _write_feedback
    from trainer.jobs import JobStore
    from trainer.service import TrainerService

    c = out.counts
    registry = Registry(settings, client=client, publish=False)
    service = TrainerService(settings, CONFIG, client=client, registry=registry)

    # the current default altered: the gate cannot score it, so nothing is promoted
    model = f"gate{uuid.uuid4().hex[:6]}"
    v1 = _deploy_v1(settings, model)
    XB, yB = _population(16, 600)
    _write_feedback(client, model, v1, XB, yB)
    flip_last_byte(registry.get_version(model, "v1").artifact_uri)
    outcome = service.handle(_rot(model))
    versions = [v.version for v in registry.list_versions(model)]
    c["trainer_altered_current"] = (outcome.state, (outcome.error or "")[:400])
    c["trainer_altered_current_versions"] = versions
    out.check("trainer refuses an altered current version",
              outcome.state == "failed" and "sha256" in (outcome.error or "")
              and versions == ["v1"]
              and registry.get_model(model).default_version == "v1",
              f"job {outcome.state} ({(outcome.error or '')[:90]}...), versions {versions}")

    # a retry finds the candidate an earlier attempt registered, now altered
    model = f"reuse{uuid.uuid4().hex[:6]}"
    v1 = _deploy_v1(settings, model)
    _write_feedback(client, model, v1, XB, yB)
    rot = _rot(model)
    JobStore(client).claim(rot, "worker-that-died", lease_s=0.05)
    fitted = DecisionTreeClassifier(random_state=0).fit(XB, yB)
    earlier = registry.register_version(
        model, fitted, estimator="decision-tree", X_reference=XB, baseline_accuracy=0.9,
        created_by=f"rot:{rot.rot_id}", parent_version="v1")
    flip_last_byte(earlier.artifact_uri)
    time.sleep(0.1)                       # the dead worker's lease expires
    outcome = service.handle(rot)
    default = registry.get_model(model).default_version
    refused, how = _refused(lambda: registry.load_model(model))
    statuses = [(v.version, v.status) for v in registry.list_versions(model)]
    c["trainer_reused_altered"] = (outcome.state, outcome.produced_version, default)
    c["trainer_reused_altered_versions"] = statuses
    # once per rot event: the altered earlier version is abandoned (with the reason),
    # not left ready beside the new one
    abandoned = [v for v, s in statuses if s == "abandoned"]
    out.check("trainer does not promote an altered candidate",
              not refused and abandoned == [earlier.version]
              and [v for v, s in statuses if s == "ready"] == ["v1", default],
              f"retried job {outcome.state}, produced {outcome.produced_version}; the "
              f"default is now {default}, which loads: "
              f"{'no (' + how + ')' if refused else 'yes'}; versions {statuses}")


def artifact_tampering(gateway, settings, client) -> Outcome:
    out = Outcome("6 altered model artifact", INVARIANT)
    gateway_and_registry(out, gateway, settings, client)
    trainer(out, settings, client)
    return out
