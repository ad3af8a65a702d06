"""`python -m vyapaar_cli`: the same as the `vyapaar` command."""

import sys

from vyapaar_cli.main import main

sys.exit(main())
