"""Run files: the atomic store (store.py), checkpoints (checkpoint.py) and queries (query.py).

Everything a run writes goes through here, and everything here can read back what it wrote.
"""

from mlptrain.runs.store import (
                                 RUNS_DIR_ENV,
                                 Run,
                                 RunStore,
                                 atomic_write_bytes,
                                 atomic_write_text,
                                 default_runs_dir,
                                 npz_bytes,
)

__all__ = ["RUNS_DIR_ENV", "Run", "RunStore", "atomic_write_bytes", "atomic_write_text",
           "default_runs_dir", "npz_bytes"]
