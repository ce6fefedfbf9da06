"""``POST /v1/feedback``: one event or a list, complete or by ``prediction_id``.

All events of a request are checked before any is published; one bad event refuses
the request (4xx naming ``events[i].field``) and nothing is sent. Then all are
published and the answer waits for Pub/Sub to confirm them: 202 means they are in
the ``feedback`` topic; 503 lists the ids that were not confirmed (send them again:
the pipeline stores each event id once).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from rotwatch.events import FeedbackEvent, InvalidEvent, format_time
from publishers.gateway.auth import require_token
from publishers.gateway.errors import ApiError, ErrorBody
from publishers.gateway.schemas import FeedbackAccepted, FeedbackBody, FeedbackItem

__all__ = ["router", "build_event"]

_LOGGER = logging.getLogger(__name__)

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)}
_COMPLETE_FIELDS = ("model", "version", "features", "prediction")

router = APIRouter(tags=["feedback"])


def build_event(item: FeedbackItem, memory, where: str) -> FeedbackEvent:
    """A validated event from one request item; :class:`ApiError` names the problem."""
    now = format_time(dt.datetime.now(dt.timezone.utc))
    if item.prediction_id is not None:
        mixed = [f for f in _COMPLETE_FIELDS if getattr(item, f) is not None]
        if mixed:
            raise ApiError(400, f"{where}: give prediction_id with was_correct/label only, "
                                "or a complete event without prediction_id; got "
                                f"prediction_id and {', '.join(mixed)}")
        if item.was_correct is None and item.label is None:
            raise ApiError(400, f"{where}.was_correct: give was_correct (true/false) "
                                "and/or label with the prediction_id")
        seen = memory.recall(item.prediction_id)
        if seen is None:
            raise ApiError(404, f"{where}.prediction_id {item.prediction_id[:64]!r} is "
                                "unknown to this gateway (it remembers the last "
                                f"{memory.capacity} predictions for {memory.ttl_s:g} s); "
                                "send the complete event instead")
        data = {"event_id": item.event_id or item.prediction_id, "model": seen.model,
                "version": seen.version, "features": list(seen.features),
                "prediction": seen.prediction, "was_correct": item.was_correct,
                "label": item.label, "event_time": item.event_time or now}
    else:
        missing = [f for f in _COMPLETE_FIELDS if getattr(item, f) is None]
        if missing:
            raise ApiError(400, f"{where}: a complete event needs {', '.join(missing)} "
                                "(or send prediction_id from a predict response instead)")
        data = item.model_dump(exclude_none=True, exclude={"prediction_id"})
        data.setdefault("event_id", uuid.uuid4().hex)
        data.setdefault("event_time", now)
    try:
        return FeedbackEvent.from_dict(data)
    except InvalidEvent as exc:
        raise ApiError(400, f"{where}.{exc.field}: {exc.reason}") from None


@router.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted,
             responses=_ERRORS, dependencies=[Depends(require_token)],
             summary="Send feedback on predictions: by prediction_id or complete events")
async def feedback(body: FeedbackBody, request: Request):
    gateway = request.app.state.gateway
    many = isinstance(body, list)
    items = body if many else [body]
    events = [build_event(item, gateway.memory, f"events[{i}]" if many else "event")
              for i, item in enumerate(items)]
    try:
        futures = await run_in_threadpool(gateway.publisher.publish_many, events)
    except InvalidEvent as exc:
        raise ApiError(400, f"{exc.field}: {exc.reason}") from None
    except RuntimeError as exc:  # the publisher is closed: the gateway is stopping
        raise ApiError(503, f"the gateway is shutting down ({exc}); send again") from None
    waiting = [asyncio.wrap_future(f) for f in futures]
    done, _ = await asyncio.wait(waiting, timeout=gateway.config.publish_timeout_s)
    failed, first_error = [], None
    for event, future in zip(events, waiting):
        error = None if future in done and not future.exception() else (
            future.exception() if future in done else TimeoutError("not confirmed in time"))
        if error is not None:
            failed.append(event.event_id)
            first_error = first_error or error
    if failed:
        for future in waiting:
            if future not in done:
                future.cancel()   # stops waiting only; the publish itself goes on
        raise ApiError(503, f"{len(failed)} of {len(events)} events were not confirmed by "
                            f"Pub/Sub ({type(first_error).__name__}: {first_error}); send "
                            "them again with the same event_id (each id is stored once): "
                            f"{', '.join(failed[:20])}")
    ids = [e.event_id for e in events]
    _LOGGER.debug("step=feedback accepted=%d", len(ids))
    return JSONResponse({"accepted": len(ids), "event_ids": ids}, status_code=202)
