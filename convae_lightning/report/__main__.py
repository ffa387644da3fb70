"""``python -m convae_lightning.report`` = ``convae report``."""

from convae_lightning.report.command import main

if __name__ == "__main__":
    main()
