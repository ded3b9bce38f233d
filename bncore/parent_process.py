"""A helper process ends with the process that started it, however that one died: a SIGKILL leaves it no time to
stop its children, and an orphan waits on its pipes for ever. Imports nothing heavy: spawned children import it."""

import os
import threading
import time

POLL_SECONDS = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Exit at once, with no clean-up, once `parent_pid` is no longer this process's parent (it has been re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(0)


def watch_parent(parent_pid: int) -> None:
    """`exit_with_parent` from a daemon thread of this process: usable as a multiprocessing initializer."""
    threading.Thread(target=exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
