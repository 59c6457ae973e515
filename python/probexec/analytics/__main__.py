import sys

from probexec.analytics.cli import main

sys.exit(main())
