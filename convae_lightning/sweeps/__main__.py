"""``python -m convae_lightning.sweeps SPEC ...``: the same command as ``convae sweep``."""

from convae_lightning.sweeps.command import main

if __name__ == "__main__":
    main()
