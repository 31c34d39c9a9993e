"""Replay producer (the script name the user knows): the same flags as ``ipsp produce``.

Example: ``python 2_preprocessing/kafka_producer.py data/dataset --rate 200 --loop 2``
"""

import sys

from ipsp.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["produce"]
    main()
