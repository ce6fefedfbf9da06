"""Offline proof that the pipeline translates to a Dataflow streaming job.

``--dry_run=True`` makes the DataflowRunner build the whole job (pipeline proto,
staged ``--setup_file`` package, job description) and stop before submitting: no
network, no credentials. A graph Dataflow cannot run (a bad coder, an unpicklable
DoFn, a step only the local runner has) fails here instead of in a paid job.
"""
from __future__ import annotations

import os

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_ARGS = ["--runner=DataflowRunner", "--project=rotwatch-demo",
              "--region=europe-west1", "--temp_location=gs://rotwatch-demo-bucket/tmp",
              "--dry_run=True"]
JOB_TYPE_STREAMING = 2   # google.dataflow.v1beta3.JobType


@pytest.fixture()
def no_emulators(monkeypatch):
    for name in ("PUBSUB_EMULATOR_HOST", "DATASTORE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def job():
    from pipelines.feedback_pipeline import run
    saved = {k: os.environ.pop(k, None) for k in ("PUBSUB_EMULATOR_HOST",
                                                   "DATASTORE_EMULATOR_HOST")}
    cwd = os.getcwd()
    os.chdir(REPO)            # --setup_file builds the sdist from the repository
    try:
        return run(CLOUD_ARGS + ["--setup_file=./setup.py"]).job
    finally:
        os.chdir(cwd)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def _transforms(job):
    return {t.unique_name: t for t in job.proto_pipeline.components.transforms.values()}


def test_job_is_a_streaming_job_with_every_stage(job):
    assert job.proto.type == JOB_TYPE_STREAMING
    top = {name for name in _transforms(job) if "/" not in name}
    assert {"ReadFeedback", "ParseFeedback", "PublishDeadLetters", "StoreFeedback",
            "RecordCheckpoint", "DedupeByEventId", "WindowedAccuracy", "DecideRot",
            "PublishRotEvents", "StoreState"} <= top


def test_dataflow_reads_pubsub_natively_with_event_time_and_ids(job):
    transforms = _transforms(job)
    [read] = [t for t in transforms.values()
              if t.spec.urn == "beam:transform:pubsub_read:v1"]
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(read.spec.payload)
    assert (payload.subscription, payload.timestamp_attribute, payload.id_attribute,
            payload.with_attributes) == (
        "projects/rotwatch-demo/subscriptions/feedback-pipeline", "event_ts", "event_id",
        True)
    # the local runner's booster is not part of a Dataflow job
    assert not [name for name in transforms if "PullBacklog" in name]


def test_setup_file_package_is_staged_for_the_workers(job):
    staged = set()
    for environment in job.proto_pipeline.components.environments.values():
        for dependency in environment.dependencies:
            if dependency.role_urn == "beam:artifact:role:staging_to:v1":
                staged.add(beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                    dependency.role_payload).staged_name)
    assert "workflow.tar.gz" in staged      # setup.py's sdist: rotwatch + pipelines
    assert job.options.get_all_options()["streaming"] is True


def test_cli_translates_the_same_job(no_emulators, capsys):
    from rotwatch.cli import main
    assert main(["pipeline", "run", *CLOUD_ARGS]) == 0
