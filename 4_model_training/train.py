"""Model training (the script name the user knows): the same flags as ``ipsp train``.

Example: ``python 4_model_training/train.py --synthetic 160 --name yolo-traffic``
or ``python 4_model_training/train.py --data /data/traffic/data.yaml --epochs 100 --device 0``
"""

import sys

from ipsp.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["train"]
    main()
