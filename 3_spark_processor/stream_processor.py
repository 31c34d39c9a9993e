"""Streaming processor (the script name the user knows): the same flags as ``ipsp stream``.

Example: ``python 3_spark_processor/stream_processor.py --topic traffic-metadata --available-now``
"""

import sys

from ipsp.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["stream"]
    main()
