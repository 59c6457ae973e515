import sys

from probexec.cli import main

sys.exit(main())
