"""The ``stairwise`` console script: the app with every command module registered."""

from stairwise.app import app
from stairwise.commands import calibrate, report, run, simulate  # noqa: F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
