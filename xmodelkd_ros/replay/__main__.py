"""``python -m xmodelkd_ros.replay``."""

import sys

from xmodelkd_ros.replay.cli import main

sys.exit(main())
