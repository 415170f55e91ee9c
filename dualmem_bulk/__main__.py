"""``python -m dualmem_bulk``: the same CLI as the ``dualmem-bulk`` command."""

from dualmem_bulk.cli import main

main()
