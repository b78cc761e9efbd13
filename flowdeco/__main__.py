"""``python -m flowdeco``: the command line, as the ``flowdeco`` script runs it."""

import sys

from ._cli._main import main

sys.exit(main())
