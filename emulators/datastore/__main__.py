"""Run the Datastore emulator in the foreground until interrupted.

    python -m emulators.datastore --port 8081 --data-dir .rotwatch/emulators
"""
from __future__ import annotations

import argparse
import logging

from emulators.datastore.service import DatastoreEmulator

_LOGGER = logging.getLogger(__name__)

DEFAULT_PORT = 8081  # the port Google's own Datastore emulator uses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data-dir", default=None,
                        help="folder for the SQLite file (default: in memory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    emulator = DatastoreEmulator(host=args.host, port=args.port, data_dir=args.data_dir)
    emulator.start()
    print(f"export DATASTORE_EMULATOR_HOST={emulator.address}", flush=True)
    try:
        emulator.wait()
    except KeyboardInterrupt:
        _LOGGER.info("stopping")
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
