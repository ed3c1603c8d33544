"""``python -m nps`` is the ``nps`` command."""

from nps.cli import main

main()
