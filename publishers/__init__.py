"""What apps touch: the feedback publisher, the HTTP gateway and the traffic simulator.

* :mod:`publishers.feedback_client` — ``FeedbackPublisher``, the library apps import.
* :mod:`publishers.gateway` — predictions + feedback over HTTP (``rotwatch gateway run``).
* :mod:`publishers.simulator` — the article's zombies as traffic (``rotwatch simulate``).
* :mod:`publishers.publish_cli` — ``rotwatch publish --file events.jsonl``.

Nothing is imported here: ``import publishers`` stays cheap.
"""
