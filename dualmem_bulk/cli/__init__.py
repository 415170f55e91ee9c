"""The ``dualmem-bulk`` command line: each command builds a config, calls one library function,
prints its report (text, or one JSON object with ``--json``) and exits with a documented code
(:mod:`.calls`). The app and its entry point are :mod:`.app`; the commands, by stage, are
:mod:`.offline`, :mod:`.runs`, :mod:`.stores` and :mod:`.online`."""

from dualmem_bulk.cli.app import app, main

__all__ = ["app", "main"]
