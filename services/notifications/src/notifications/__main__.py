"""`python -m notifications serve|migrate|makemigration`."""

from backhaul_kit.runtime import cli
from notifications.bootstrap import bootstrap


def main() -> None:
    cli(bootstrap)


if __name__ == "__main__":
    main()
