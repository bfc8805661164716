import sys

from rtcore.main import main

sys.exit(main())
