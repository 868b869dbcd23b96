"""Checkpoints of a SQLite write-ahead log on a thread of their own.

In WAL mode every commit appends pages to ``FILE-wal``; a checkpoint copies them back into the
database file and fsyncs both. By default the connection that commits past 1,000 pages of WAL
runs that checkpoint itself, inside its commit: a stage's append that happens to cross the
line waits for the copy and two fsyncs (here 20-270 ms, against well under a millisecond for
an ordinary append). A :class:`Checkpointer` takes that work off the writer: the writer's
connection turns automatic checkpoints off and reports what it writes, and every
``every_bytes`` the checkpointer runs a ``PASSIVE`` checkpoint on its own connection, on its
own thread. SQLite releases the interpreter lock while it copies and syncs, so the writer goes
on meanwhile (on another core). A passive checkpoint never blocks writers or readers; it copies
what no reader still needs, and once it has copied everything, the next write starts the WAL
file from its beginning again, so the file stays about ``every_bytes`` long.

That restart needs a checkpoint to finish between one commit and the next write: a writer
that appends without pause (a backlog, in large batches) may keep starting its next
transaction while the checkpoint copies, and the WAL then grows without end. Once it has
grown past :data:`RESTART_AFTER` times ``every_bytes``, the checkpointer runs a ``RESTART``
checkpoint instead: it waits for the writer's transaction in progress to end, copies the
little that the passive checkpoint left, and holds the next writer back only that long, so
the next write starts the file again.

Nothing here affects what a transaction guarantees: commits are atomic and durable (at the
connection's ``synchronous`` setting) whether or not their pages have been checkpointed yet.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EVERY_BYTES = 16 << 20
"""Bytes written (as the writer counts them) between two checkpoints."""

RESTART_AFTER = 4
"""How many times ``every_bytes`` the WAL may grow to before a checkpoint restarts it."""

RESTART_WAIT_S = 1.0
"""The longest a restarting checkpoint waits for others (see :meth:`Checkpointer._run`)."""

COMMIT_BYTES = 8192
"""What a commit adds to the WAL besides its payload (it rewrites at least a B-tree leaf and
the pages above it), so that small commits (offsets, positions) also bring a checkpoint."""


class Checkpointer:
    """Runs passive checkpoints of the database at ``path`` on a daemon thread.

    The writer calls :meth:`wrote` after each commit with about how many bytes it wrote (its
    payload: :data:`COMMIT_BYTES` are added for the commit itself), and
    :meth:`close` when it closes its connection. The thread starts with the first checkpoint
    that is due, so a reader that never writes costs nothing.
    """

    def __init__(self, path: Path, every_bytes: int = EVERY_BYTES) -> None:
        self.path = path
        self.every_bytes = every_bytes
        self.runs = 0
        """Checkpoints completed so far (each may have copied only part of the WAL)."""
        self.restarts = 0
        """Of those, how many also had to restart the WAL (see :data:`RESTART_AFTER`)."""
        self._pending = 0
        self._running = threading.Lock()
        """Held by the thread while it runs a checkpoint (see :meth:`paused`)."""
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wrote(self, nbytes: int = 0) -> None:
        self._pending += nbytes + COMMIT_BYTES
        if self._pending < self.every_bytes or self._stopping:
            return
        self._pending = 0
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"checkpoint {self.path.name}", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        # The busy timeout bounds how long a RESTART checkpoint waits for the writer's
        # transaction and for readers of older snapshots, holding new writers back meanwhile;
        # past it the checkpoint gives up and the next one tries again.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=RESTART_WAIT_S
        )
        page = db.execute("PRAGMA page_size").fetchone()[0]
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    with self._running:
                        _busy, frames, _copied = db.execute(
                            "PRAGMA wal_checkpoint(PASSIVE)"
                        ).fetchone()
                        if frames * page > RESTART_AFTER * self.every_bytes:
                            db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                            self.restarts += 1
                except sqlite3.Error:
                    continue  # busy with another checkpoint, say: the next one catches up
                self.runs += 1
        finally:
            db.close()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No checkpoint runs inside this block (one running when it starts is finished
        first): for a fork, so that the child never inherits SQLite's locks held midway."""
        with self._running:
            yield

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running)."""
        self._stopping = True
        if self._thread is not None:
            self._wake.set()
            self._thread.join()
            self._thread = None
