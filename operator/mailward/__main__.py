import sys

from mailward.cli import main

sys.exit(main())
