"""The offline run: plan partitions, export, convert and write them in tasks, place the target.

``run.py`` is the driver; ``partition_task.py`` is what a worker does with one partition;
``export.py`` streams a source into the snapshot; ``place.py`` puts a finished store where the
operator asked; ``dry_run.py`` checks and estimates without writing.
"""
