"""`python -m acar_deploy.train ARGS` = `acar-deploy train ARGS`; what torchrun launches:

    torchrun --nproc-per-node 2 -m acar_deploy.train --config CFG --data DIR --out RUN_DIR
"""

from __future__ import annotations

import sys

from acar_deploy.cli.main import app

if __name__ == "__main__":
    app(args=["train", *sys.argv[1:]], prog_name="acar-deploy train")
