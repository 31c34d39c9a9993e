"""Python main file for spark-submit in cluster mode (the Spark operator overlay).

spark-submit only treats an application as Python when its file ends in ``.py``, so the
``ipsp`` console script cannot be submitted directly; this file hands its arguments
(for example ``stream --topic traffic-metadata``) to the same CLI.
"""

from ipsp.cli import main

if __name__ == "__main__":
    main()
