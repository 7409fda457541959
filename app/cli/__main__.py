"""`python -m app.cli`: the same as the `routegraph` console script."""

from app.cli import main

main()
