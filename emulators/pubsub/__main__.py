"""Run the Pub/Sub emulator in the foreground until Ctrl-C.

    python -m emulators.pubsub --host 127.0.0.1 --port 8085
    export PUBSUB_EMULATOR_HOST=127.0.0.1:8085
"""
from __future__ import annotations

from emulators.grpcserver import foreground_parser, run_in_foreground
from emulators.pubsub.emulator import DEFAULT_PORT, PubSubEmulator

__all__ = ["main"]


def main(argv=None) -> None:
    args = foreground_parser(__doc__, DEFAULT_PORT).parse_args(argv)
    run_in_foreground(PubSubEmulator(host=args.host, port=args.port),
                      "PUBSUB_EMULATOR_HOST")


if __name__ == "__main__":
    main()
