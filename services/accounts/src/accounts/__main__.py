"""`python -m accounts serve|migrate|makemigration`."""

from accounts.bootstrap import bootstrap
from backhaul_kit.runtime import cli


def main() -> None:
    cli(bootstrap)


if __name__ == "__main__":
    main()
