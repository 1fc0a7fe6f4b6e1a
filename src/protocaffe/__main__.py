import sys

from protocaffe.cli import main

sys.exit(main())
