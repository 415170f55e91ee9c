"""The run directory's owner: the name of every file a run keeps (:mod:`.files`) and the
reports of the operations on a run (:mod:`.reports`). Nothing here imports the rest of the
package, so stores, sources and drivers alike take their names from it."""
