"""`python -m acar_deploy ...` is the same as the `acar-deploy` console script."""

from acar_deploy.cli.main import main

main()
