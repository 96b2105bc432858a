"""The ``stairwise`` console script: the app with every command module registered."""

from stairwise.app import app
from stairwise.commands import simulate  # noqa: F401


def main() -> None:
    app()
