"""``python -m mnv3ext {bench,info,report,bench-ops}``: see mnv3ext.bench.cli."""
import sys

from mnv3ext.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
