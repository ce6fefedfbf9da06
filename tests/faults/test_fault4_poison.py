"""Fault 4 — poison messages.

Invariant: every poison message — bad JSON, wrong types, NaN, wrong feature count,
unknown version, oversize, binary garbage — ends in the dead-letter topic with its
payload and a reason; valid + dead-lettered = published; the pipeline never stalls.

The 1% poison rides in the run shared with faults 1 and 9 (``delivery_run``); the
messages too big for a gRPC client with its default receive limit have a run of
their own (about a minute: they are dead-lettered after 5 ack deadlines of 10 s).
"""
from __future__ import annotations

import pytest

from faultkit.feedback_stream import POISON_KINDS
from faultkit.pipeline_delivery import big_poison, poison_outcome

pytestmark = pytest.mark.slow


def test_each_kind_of_poison_is_dead_lettered_with_a_reason(delivery_run):
    """Invariant: every poison message is in feedback-deadletter, with the original
    payload and the stage/field/reason of its kind."""
    outcome = poison_outcome(delivery_run)
    c = outcome.counts
    assert {p.kind for p in delivery_run.poison} == set(POISON_KINDS)
    assert c["poison"] >= 0.01 * c["published_logical"] - 1
    assert c["dead_lettered"] == c["poison"], outcome.summary()
    assert c["wrong_reason"] == [], outcome.summary()


def test_valid_plus_dead_lettered_equals_published(delivery_run):
    """Invariant: stored valid + dead-lettered = published (a repeat counts once);
    no valid event is dead-lettered."""
    outcome = poison_outcome(delivery_run)
    c = outcome.counts
    assert c["stored_valid"] + c["dead_lettered"] == c["published_logical"], \
        outcome.summary()
    assert c["valid_dead_lettered"] == 0, outcome.summary()


def test_the_pipeline_never_stalls_on_poison(delivery_run):
    """Invariant: with poison spread through the stream the job stays RUNNING and
    stores every valid event."""
    outcome = poison_outcome(delivery_run)
    assert outcome.counts["pipeline_state"] == "RUNNING", outcome.summary()
    assert outcome.counts["stored_valid"] == len(delivery_run.valid), outcome.summary()


def test_a_message_over_the_grpc_receive_limit_does_not_stall_the_pipeline(emulators):
    """Invariant: a 5 MB message (legal: Pub/Sub takes 10 MB) first in the stream and
    another after 500 of 1,500 valid events: every valid event is stored within 15 s,
    the job stays RUNNING, and each big message reaches feedback-deadletter with its
    payload and a reason.

    Locally the official client keeps gRPC's 4 MiB receive limit, and Beam's own read
    (``Pull(max_messages=10)``) uses it; the emulator never puts such a message in a
    response with others (emulators/pubsub/delivery.py), so only that Pull fails. The
    message is redelivered after each ack deadline; the pipeline dead-letters it with
    ``rotwatch_reason`` if its unlimited client takes it, else the subscription's
    dead-letter policy forwards it with ``CloudPubSubDeadLetterSourceDeliveryCount``.
    The subscription gets Pub/Sub's minimums, a 10 s ack deadline and 5 attempts:
    measured, both were dead-lettered by the policy ~52 s after the start (valid
    events all stored in ~3 s). One run holds both positions to halve the time."""
    outcome = big_poison(n_valid=1500, at=(0, 500), window_s=15.0,
                         dead_letter_timeout_s=90.0)
    c = outcome.counts
    assert c["stored"] == c["valid"] and c["state"] == "RUNNING", outcome.summary()
    assert set(c["big"]) == {0, 500}, outcome.summary()
    for letter in c["big"].values():
        assert letter["reason"] and letter["payload_intact"], outcome.summary()
        assert letter["via"] in ("pipeline", "subscription's dead-letter policy")
