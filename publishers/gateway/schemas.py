"""Request and response bodies, typed: FastAPI validates them and describes them in
the OpenAPI document (``/openapi.json``) that clients and the fuzz tests read.

Prediction bodies are Google ML Engine's: ``{"instances": [[...], ...]}``, plus
``"model"`` on ``POST /v1/predict``. Numbers are strict: ``"3.4"``, ``true``, ``NaN``
and ``Infinity`` are refused, not coerced.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, StrictBool, \
    StrictInt, StrictStr, Tag

from rotwatch.events import MAX_FEATURES

__all__ = [
    "MAX_INSTANCES", "MAX_FEEDBACK_EVENTS", "Number", "PredictRequest", "InstancesRequest",
    "PredictResponse", "FeedbackItem", "FeedbackBody", "FeedbackAccepted",
    "SetDefaultRequest", "DefaultChanged", "ModelSummary", "ModelList", "ModelDetail",
]

# Instances per predict request: a tree answers 1,000 rows in about a millisecond, and
# 1,000 rows of 4 features stay far below the body size limit.
MAX_INSTANCES = 1000
# Feedback events per request: one Pub/Sub batch of 100 messages at most x 5, so a
# request is confirmed within a few publish round trips.
MAX_FEEDBACK_EVENTS = 500
# Long enough for "projects/<30 chars>/models/<63 chars>/versions/v123456789".
_MAX_MODEL_SPEC_CHARS = 200

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Label = Union[StrictInt, StrictStr]
Instance = Annotated[list[Number], Field(min_length=1, max_length=MAX_FEATURES)]
Instances = Annotated[list[Instance], Field(
    min_length=1, max_length=MAX_INSTANCES,
    description=f"rows of feature values, 1..{MAX_INSTANCES} per request",
    examples=[[[2.0, 3.4, 5.1, 1.0]]])]


class InstancesRequest(BaseModel):
    """Body of ``/v1/models/{model}[/versions/{v}]:predict`` (ML Engine's format)."""

    model_config = ConfigDict(extra="forbid")
    instances: Instances
    signature_name: StrictStr | None = Field(
        None, max_length=200, description="accepted for ML Engine clients; ignored")


class PredictRequest(InstancesRequest):
    """Body of ``POST /v1/predict``: the instances and the model to ask."""

    model: StrictStr = Field(
        ..., min_length=1, max_length=_MAX_MODEL_SPEC_CHARS,
        description="'zombies' for the default version, 'zombies/versions/v2' for a "
                    "pinned one ('projects/<p>/models/...' names work too)",
        examples=["zombies", "zombies/versions/v2"])


class PredictResponse(BaseModel):
    predictions: list[Any] = Field(..., description="one class label per instance")
    model: str
    version: str = Field(..., description="the version that answered")
    prediction_ids: list[str] = Field(..., description="one per instance; send one back "
                                      "with was_correct/label to POST /v1/feedback")


class FeedbackItem(BaseModel):
    """One verdict: a ``prediction_id`` this gateway issued, or a complete event.

    By id: ``{"prediction_id": "...", "was_correct": false}`` — the gateway fills in
    the model, version, features and prediction, and uses the id as the event id (a
    retried request overwrites instead of counting twice). Complete:
    ``{"model", "version", "features", "prediction", "was_correct"/"label"}``.
    """

    model_config = ConfigDict(extra="forbid")
    prediction_id: StrictStr | None = Field(None, max_length=128)
    was_correct: StrictBool | None = None
    label: Label | None = None
    model: StrictStr | None = Field(None, max_length=63)
    version: StrictStr | None = Field(None, max_length=16)
    features: Annotated[list[Number], Field(min_length=1, max_length=MAX_FEATURES)] | None = None
    prediction: Label | None = None
    event_id: StrictStr | None = Field(None, max_length=128, description="give one to make "
                                       "retries idempotent; generated if absent")
    event_time: StrictStr | None = Field(None, max_length=64, description="RFC 3339; now "
                                         "if absent")
    schema_version: StrictInt | None = None


def _one_or_many(value: Any) -> str:
    return "events" if isinstance(value, list) else "event"


FeedbackBody = Annotated[
    Union[Annotated[FeedbackItem, Tag("event")],
          Annotated[list[FeedbackItem], Tag("events"),
                    Field(min_length=1, max_length=MAX_FEEDBACK_EVENTS)]],
    Discriminator(_one_or_many)]


class FeedbackAccepted(BaseModel):
    accepted: int
    event_ids: list[str] = Field(..., description="in the order of the request's events")


class SetDefaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictStr = Field(..., max_length=16, examples=["v1"])
    reason: StrictStr = Field("", max_length=500, examples=["rollback: v2 misbehaves"])


class DefaultChanged(BaseModel):
    model: str
    default_version: str
    previous_version: str | None
    changed: bool = Field(..., description="false if it already was the default")
    published: bool = Field(..., description="whether model-updates was told")
    serving_version: str | None = Field(None, description="what this gateway serves now")


class ModelSummary(BaseModel):
    name: str
    default_version: str | None
    serving_version: str | None = None
    updated_at: str | None = None


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(BaseModel):
    name: str
    default_version: str | None
    serving_version: str | None
    loaded_versions: list[str]
    versions: list[dict[str, Any]]
    history: list[dict[str, Any]]
