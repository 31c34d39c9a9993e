"""Model training (the script name the user knows): the same flags as ``ipsp train``.

Example: ``python 4_model_training/train.py --data ../shared/data/vn-traffic-cam01/data.yaml``
(fine-tunes the shipped CenterNet), or with Ultralytics and your own weights
``python 4_model_training/train.py --data data.yaml --weights yolov8s.pt --device 0``
"""

import sys

from ipsp.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["train"]
    main()
