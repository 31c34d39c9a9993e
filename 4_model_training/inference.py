"""Detection on image files (the script name the user knows): the same flags as ``ipsp detect``.

Example: ``python 4_model_training/inference.py images/ --format jsonl --model centernet``
"""

import sys

from ipsp.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["detect"]
    main()
