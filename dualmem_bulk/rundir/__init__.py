"""The run directory's owner: the name of every file a run keeps (:mod:`.files`), the report of
a run (:mod:`.run_report`) and of each operation on it (:mod:`.reports`). The names and reports
import nothing of the package but ``Progress``, so stores, sources and drivers alike take them
from here."""
