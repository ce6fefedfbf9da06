"""``python -m emulators start``: run the emulators without the rest of rotwatch."""
import sys

from emulators.cli import main

sys.exit(main())
