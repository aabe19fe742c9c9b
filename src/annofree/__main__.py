import sys

from annofree.cli import main

sys.exit(main())
