"""`python -m provisioning serve|migrate|makemigration`."""

from backhaul_kit.runtime import cli
from provisioning.bootstrap import bootstrap


def main() -> None:
    cli(bootstrap)


if __name__ == "__main__":
    main()
