"""Worker processes for listener sources (``workers: N``).

`duct.workers.config` splits one configuration into the parent's part and
each worker's, `duct.workers.sockets` binds the listening sockets in the
parent, `duct.workers.endpoints` says how each is bound and adopted,
`duct.workers.parent` runs and restarts the workers, `duct.workers.stats`
gathers their statistics, and ``python -m duct.workers`` is a worker.
See `duct.workers.parent` for the design.
"""
