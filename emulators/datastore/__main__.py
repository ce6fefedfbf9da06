"""Run the Datastore emulator in the foreground until Ctrl-C.

    python -m emulators.datastore --port 8081 --data-dir .rotwatch/emulators
    export DATASTORE_EMULATOR_HOST=127.0.0.1:8081
"""
from __future__ import annotations

from emulators.datastore.service import DatastoreEmulator
from emulators.grpcserver import foreground_parser, run_in_foreground

__all__ = ["main"]

DEFAULT_PORT = 8081  # the port Google's own Datastore emulator uses


def main(argv=None) -> None:
    parser = foreground_parser(__doc__, DEFAULT_PORT)
    parser.add_argument("--data-dir", default=None,
                        help="folder for the SQLite file (default: in memory)")
    args = parser.parse_args(argv)
    run_in_foreground(DatastoreEmulator(host=args.host, port=args.port,
                                        data_dir=args.data_dir),
                      "DATASTORE_EMULATOR_HOST")


if __name__ == "__main__":
    main()
