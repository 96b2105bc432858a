"""The ``stairwise`` console script: the app with every command module registered."""

from stairwise.app import app
from stairwise.commands import (  # noqa: F401
    calibrate,
    compare,
    report,
    run,
    simulate,
    sweep,
    validate,
)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
