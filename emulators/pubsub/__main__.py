"""Run the Pub/Sub emulator in the foreground until Ctrl-C.

    python -m emulators.pubsub --host 127.0.0.1 --port 8085
    export PUBSUB_EMULATOR_HOST=127.0.0.1:8085
"""
from __future__ import annotations

import argparse
import logging

from emulators.pubsub.emulator import DEFAULT_PORT, PubSubEmulator

__all__ = ["main"]

_LOGGER = logging.getLogger(__name__)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    emulator = PubSubEmulator(host=args.host, port=args.port).start()
    print(f"export PUBSUB_EMULATOR_HOST={emulator.address}", flush=True)
    try:
        emulator.wait()
    except KeyboardInterrupt:
        _LOGGER.info("stopping")
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
