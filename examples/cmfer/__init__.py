"""Support code of ``examples/train_cmfer.py``: configuration, data streams, metrics, runtime
(DDP, RNG, checkpoints) and reporting. ``train_cmfer.py`` itself is the readable composition."""
