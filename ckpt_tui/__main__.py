import sys

from ckpt_tui.cli import main

sys.exit(main())
