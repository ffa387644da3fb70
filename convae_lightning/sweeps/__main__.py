"""``python -m convae_lightning.sweeps SPEC ...``: the same command as ``convae sweep``."""

from convae_lightning.allocator import tune_malloc
from convae_lightning.sweeps.command import main

if __name__ == "__main__":
    tune_malloc()  # a sweep worker trains as `convae fit` does: with the allocator tuned
    main()
