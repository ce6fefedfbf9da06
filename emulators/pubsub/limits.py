"""Pub/Sub's documented limits and defaults, checked the way the service checks them.

Every check raises INVALID_ARGUMENT naming the bad value and the limit, so a caller
that works here will not be refused by Google for the same reason.
"""
from __future__ import annotations

from emulators.pubsub import names
from emulators.pubsub.errors import invalid, unimplemented

__all__ = [
    "MAX_REQUEST_BYTES", "MAX_MESSAGE_BYTES", "MAX_MESSAGES_PER_PUBLISH",
    "MAX_ATTRIBUTES", "MAX_ATTRIBUTE_KEY_BYTES", "MAX_ATTRIBUTE_VALUE_BYTES",
    "MAX_ORDERING_KEY_BYTES", "DEFAULT_ACK_DEADLINE_S", "MIN_ACK_DEADLINE_S",
    "MAX_ACK_DEADLINE_S", "DEFAULT_RETENTION_S", "MIN_RETENTION_S", "MAX_RETENTION_S",
    "DEFAULT_MAX_DELIVERY_ATTEMPTS", "DEFAULT_EXPIRATION_TTL_S", "check_publish",
    "check_subscription", "ack_deadline_of", "retention_of", "max_attempts_of",
    "check_modify_deadline", "duration_s", "micros_of",
]

# Publish limits (Pub/Sub quotas and limits page). 10 MB is the publish request size
# the official client itself enforces (`_SERVER_PUBLISH_MAX_BYTES = 10 * 1000 * 1000`).
MAX_REQUEST_BYTES = 10 * 1000 * 1000
MAX_MESSAGE_BYTES = 10 * 1000 * 1000
MAX_MESSAGES_PER_PUBLISH = 1000
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_ORDERING_KEY_BYTES = 1024

# Subscription settings: a lease is 10 s unless asked otherwise, at most 10 minutes.
DEFAULT_ACK_DEADLINE_S = 10
MIN_ACK_DEADLINE_S = 10
MAX_ACK_DEADLINE_S = 600
# Unacked messages are kept 7 days by default; 10 minutes .. 7 days may be asked.
DEFAULT_RETENTION_S = 7 * 24 * 3600
MIN_RETENTION_S = 10 * 60
MAX_RETENTION_S = 7 * 24 * 3600
# A dead-letter policy without a count means 5 attempts; 5..100 may be asked.
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
MIN_MAX_DELIVERY_ATTEMPTS = 5
MAX_MAX_DELIVERY_ATTEMPTS = 100
# What Pub/Sub reports for a subscription created without an expiration policy.
DEFAULT_EXPIRATION_TTL_S = 31 * 24 * 3600


def duration_s(duration) -> float:
    """Seconds of a protobuf Duration."""
    return duration.seconds + duration.nanos / 1e9


def micros_of(timestamp) -> int:
    """Microseconds since the epoch of a protobuf Timestamp."""
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


def check_publish(request) -> None:
    """Refuse a PublishRequest that Pub/Sub would refuse."""
    count = len(request.messages)
    if count == 0:
        raise invalid("The publish request has no messages: send at least one.")
    if count > MAX_MESSAGES_PER_PUBLISH:
        raise invalid(f"The publish request has {count} messages; at most "
                      f"{MAX_MESSAGES_PER_PUBLISH} are allowed. Split the batch.")
    size = request.ByteSize()
    if size > MAX_REQUEST_BYTES:
        raise invalid(f"The publish request is {size} bytes; at most "
                      f"{MAX_REQUEST_BYTES} are allowed. Send smaller batches.")
    for index, message in enumerate(request.messages):
        _check_message(index, message)


def _check_message(index: int, message) -> None:
    attributes = message.attributes
    if not message.data and not attributes:
        raise invalid(f"Message {index} is empty: each message needs non-empty data "
                      "or at least one attribute.")
    size = message.ByteSize()
    if size > MAX_MESSAGE_BYTES:
        raise invalid(f"Message {index} is {size} bytes; a message may be at most "
                      f"{MAX_MESSAGE_BYTES} bytes.")
    if len(attributes) > MAX_ATTRIBUTES:
        raise invalid(f"Message {index} has {len(attributes)} attributes; at most "
                      f"{MAX_ATTRIBUTES} are allowed.")
    for key, value in attributes.items():
        if len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES:
            raise invalid(f"Message {index}: attribute key {key[:40]!r}... is longer "
                          f"than {MAX_ATTRIBUTE_KEY_BYTES} bytes.")
        if key.lower().startswith("goog"):
            raise invalid(f"Message {index}: attribute key {key!r} is reserved "
                          "(keys may not start with 'goog').")
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise invalid(f"Message {index}: the value of attribute {key!r} is "
                          f"{len(value.encode())} bytes; at most "
                          f"{MAX_ATTRIBUTE_VALUE_BYTES} are allowed.")
    if len(message.ordering_key.encode()) > MAX_ORDERING_KEY_BYTES:
        raise invalid(f"Message {index}: the ordering key is longer than "
                      f"{MAX_ORDERING_KEY_BYTES} bytes.")


def ack_deadline_of(seconds: int) -> int:
    """The lease length of a subscription: 0 means the default."""
    if seconds == 0:
        return DEFAULT_ACK_DEADLINE_S
    if not MIN_ACK_DEADLINE_S <= seconds <= MAX_ACK_DEADLINE_S:
        raise invalid(f"Invalid ack_deadline_seconds={seconds}: it must be between "
                      f"{MIN_ACK_DEADLINE_S} and {MAX_ACK_DEADLINE_S} (0 = default "
                      f"{DEFAULT_ACK_DEADLINE_S}).")
    return seconds


def retention_of(subscription) -> float:
    """Seconds a subscription keeps its messages (unset means 7 days)."""
    if not subscription.HasField("message_retention_duration"):
        return DEFAULT_RETENTION_S
    seconds = duration_s(subscription.message_retention_duration)
    if not MIN_RETENTION_S <= seconds <= MAX_RETENTION_S:
        raise invalid(f"Invalid message_retention_duration={seconds:g}s: it must be "
                      f"between {MIN_RETENTION_S} s (10 minutes) and "
                      f"{MAX_RETENTION_S} s (7 days).")
    return seconds


def max_attempts_of(subscription) -> int:
    """Delivery attempts before dead-lettering; 0 when there is no dead-letter policy."""
    if not subscription.HasField("dead_letter_policy"):
        return 0
    policy = subscription.dead_letter_policy
    if not policy.dead_letter_topic:
        if policy.max_delivery_attempts:
            raise invalid("dead_letter_policy.max_delivery_attempts is set but "
                          "dead_letter_topic is empty: name the dead-letter topic.")
        return 0
    names.topic_name(policy.dead_letter_topic)
    attempts = policy.max_delivery_attempts or DEFAULT_MAX_DELIVERY_ATTEMPTS
    if not MIN_MAX_DELIVERY_ATTEMPTS <= attempts <= MAX_MAX_DELIVERY_ATTEMPTS:
        raise invalid(f"Invalid dead_letter_policy.max_delivery_attempts={attempts}: "
                      f"it must be between {MIN_MAX_DELIVERY_ATTEMPTS} and "
                      f"{MAX_MAX_DELIVERY_ATTEMPTS} (0 = default "
                      f"{DEFAULT_MAX_DELIVERY_ATTEMPTS}).")
    return attempts


def check_subscription(subscription) -> None:
    """Refuse settings Pub/Sub refuses, and features this emulator does not serve."""
    ack_deadline_of(subscription.ack_deadline_seconds)
    retention_of(subscription)
    max_attempts_of(subscription)
    if subscription.push_config.push_endpoint:
        raise unimplemented("Push subscriptions are not supported by this emulator "
                            f"(push_endpoint={subscription.push_config.push_endpoint!r})"
                            ": create a pull subscription.")
    for field in ("bigquery_config", "cloud_storage_config", "bigtable_config"):
        if subscription.HasField(field):
            raise unimplemented(f"{field} subscriptions are not supported by this "
                                "emulator: create a pull subscription.")
    if subscription.filter:
        raise unimplemented(f"Subscription filters are not supported by this emulator "
                            f"(filter={subscription.filter!r}): filter in the subscriber.")


def check_modify_deadline(seconds: int) -> None:
    if not 0 <= seconds <= MAX_ACK_DEADLINE_S:
        raise invalid(f"Invalid ack deadline {seconds} s: it must be between 0 (nack) "
                      f"and {MAX_ACK_DEADLINE_S}.")
