import sys

from organisms.cli import main

sys.exit(main())
