"""What is done to a run once it is written, by its mode: the one place that reads the mode
and dispatches (:mod:`.modes`), rollback (:mod:`.rollback` and one module per mode), finalize
(:mod:`.finalize`) and status (:mod:`.status`); verification is :mod:`dualmem_bulk.verify`,
the run directory's names and reports :mod:`dualmem_bulk.rundir`."""
