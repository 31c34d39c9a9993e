"""Batch packing (the script name the user knows): the same flags as ``ipsp pack``.

Example: ``python 2_preprocessing/preprocess_lmdb.py data/frames --to s3://ipsp/datasets/demo``
"""

import sys

from ipsp.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["pack"]
    main()
