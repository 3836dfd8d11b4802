"""`python -m billing serve|migrate|makemigration`."""

from backhaul_kit.runtime import cli
from billing.bootstrap import bootstrap


def main() -> None:
    cli(bootstrap)


if __name__ == "__main__":
    main()
