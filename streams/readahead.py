"""GPS pings read and parsed ahead, in a process of its own, for the projection stage.

Reading a partition's pings off the log and parsing each one's fix is a third of what the
projection stage does while it catches up (a rebuild, a replay, a restart after a while), and
none of it depends on the fold. So, on a machine with a second core and a log that can be
reopened from a fork (the embedded one), the stage forks a *reader*: it is asked for chunks of
each partition (:data:`CHUNK` pings from an offset), in the order the stage will want them,
and answers each with the chunk read through its own connection and parsed
(:class:`projections.pings.Pings`), while the stage folds what it has. The stage keeps up to
:data:`DEPTH` chunks asked for per partition.

What the stage folds does not change: a chunk is parsed by the same function the stage would
use (the tests compare the stores of both ways), and the stage takes a chunk only if it starts
at the offset it reads next; otherwise (a restart's re-read, a read after the chunks asked for)
it reads for itself and drops the chunks it asked for. A failure in the reader fails the read,
with the reader's traceback. The reader exits with the stage (:meth:`PingReadAhead.close`) or as
soon as the stage's process goes away (its end of the pipe closes); the stage also stops it once
it has caught up (the reader has no whole chunk left to read), since a forked process keeps the
pages of the stage's memory as they were at the fork, which the stage's own writes would
otherwise duplicate for as long as it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import threading
import traceback
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

from projections.pings import Pings
from streams.follower import cores, stop

CHUNK = 2_000
"""Pings per chunk asked for."""
DEPTH = 16
"""Chunks asked for ahead per partition (a bound on what the pipe and the stage hold)."""


class ReaderFailedError(RuntimeError):
    """The reader process failed (its traceback is the message) or went away."""


class PingReadAhead:
    """The stage's side (see the module docstring). Use :meth:`start`."""

    def __init__(self, topic: str, process: Any, send: Connection, receive: Connection) -> None:
        self.topic = topic
        self.chunk = CHUNK
        self.depth = DEPTH
        self._process = process
        self._send = send
        self._receive = receive
        self._asked: dict[int, deque[int]] = {}
        """Per partition, the offsets of the chunks asked for and not taken, in order."""
        self._next: dict[int, int] = {}
        """Per partition, the offset after the last chunk asked for."""
        self._got: dict[tuple[int, int], Pings] = {}
        """Chunks received and not taken yet."""
        self._dropped: set[tuple[int, int]] = set()
        """Chunks asked for, no longer wanted, and not received yet."""
        self._failure: str | None = None
        self._arrived = threading.Condition()
        # Replies are taken off the pipe as they come, by a thread (the reader would
        # otherwise wait, with a chunk larger than the pipe holds, until the stage asks).
        self._receiver = threading.Thread(
            target=self._receive_all, name=f"{topic} reader replies", daemon=True
        )
        self._receiver.start()

    @classmethod
    def start(cls, log: Any, topic: str) -> PingReadAhead | None:
        """Fork the reader for ``topic`` of ``log``; None where that cannot help (no fork,
        one core, or a log that cannot be reopened from a fork)."""
        if "fork" not in multiprocessing.get_all_start_methods() or cores() < 2:
            return None
        if not all(hasattr(log, name) for name in ("reopen", "quiet", "value_at")):
            return None
        context = multiprocessing.get_context("fork")
        # Two one-way pipes: what the reader wrote last (its failure) stays readable after it
        # has exited.
        their_reader, our_writer = context.Pipe(duplex=False)
        our_reader, their_writer = context.Pipe(duplex=False)
        sys.stdout.flush()
        sys.stderr.flush()
        with log.quiet():
            process = context.Process(
                target=_serve,
                args=(log, topic, their_reader, their_writer, our_writer, our_reader),
                name=f"fieldstream {topic} reader",
                daemon=True,
            )
            process.start()
        their_reader.close()
        their_writer.close()
        return cls(topic, process, our_writer, our_reader)

    def ask(self, partition: int, offset: int, end: int) -> None:
        """Keep the chunks of ``partition`` from ``offset`` up to ``end`` (its end offset as the
        stage knows it) asked for, up to :attr:`depth` of them; only whole chunks (the last
        few pings the stage reads for itself)."""
        asked = self._asked.setdefault(partition, deque())
        at = max(offset, self._next.get(partition, offset)) if asked else offset
        while len(asked) < self.depth and at + self.chunk <= end:
            self._send.send((partition, at, self.chunk))
            asked.append(at)
            at += self.chunk
        self._next[partition] = at

    def idle(self) -> bool:
        """Whether no chunk is asked for (every partition was left with less than a chunk
        to read, or its chunks were dropped)."""
        return not any(self._asked.values())

    def take(self, partition: int, offset: int, most: int) -> Pings | None:
        """The chunk of ``partition`` at ``offset`` (waiting for it), if it was asked for and
        holds no more than ``most`` pings; else None, and the chunks asked for the partition
        are dropped (the stage then reads for itself and asks again)."""
        asked = self._asked.get(partition)
        if not asked:
            return None
        if asked[0] != offset or self.chunk > most:
            self._drop(partition, asked)
            asked.clear()
            return None
        asked.popleft()
        key = (partition, offset)
        with self._arrived:
            while key not in self._got:
                if self._failure is not None:
                    raise ReaderFailedError(self._failure)
                self._arrived.wait()
            return self._got.pop(key)  # (its values are not sent: set its source to look them up)

    def _drop(self, partition: int, offsets: Iterable[int]) -> None:
        with self._arrived:
            for at in offsets:
                if self._got.pop((partition, at), None) is None:
                    self._dropped.add((partition, at))

    def _receive_all(self) -> None:
        """The receiving thread: every reply into :attr:`_got` (or dropped), until the pipe
        closes or the reader fails."""
        while True:
            try:
                reply = self._receive.recv()
            except (EOFError, OSError):
                failure = f"the {self.topic} reader went away"
                break
            if reply[0] == "error":
                failure = f"the {self.topic} reader failed:\n{reply[1]}"
                break
            _, partition, offset, pings = reply
            key = (partition, offset)
            with self._arrived:
                if key in self._dropped:
                    self._dropped.discard(key)
                else:
                    self._got[key] = pings
                    self._arrived.notify_all()
        with self._arrived:
            self._failure = failure
            self._arrived.notify_all()

    def release(self) -> None:
        """Let the reader go without waiting for it: it exits once its end of the pipe
        closes (:meth:`close` then finds it gone)."""
        with contextlib.suppress(OSError):
            self._send.close()

    def close(self) -> None:
        """Stop the reader (it exits once its end of the pipe closes)."""
        with contextlib.suppress(OSError):
            self._send.close()
        if self._process is not None:
            stop(self._process, timeout=5)
            self._process = None
        self._receiver.join(timeout=5)  # (the reader gone, its pipe is closed)
        with contextlib.suppress(OSError):
            self._receive.close()


def _serve(
    log: Any,
    topic: str,
    requests: Connection,
    replies: Connection,
    parents_writer: Connection,
    parents_reader: Connection,
) -> None:
    """The reader: answers each request (partition, offset, n) with the pings read through a
    connection of its own and parsed, in the order asked; exits when the stage's end of the
    pipe closes."""
    parents_writer.close()  # so that the stage closing its end ends our reads
    parents_reader.close()
    try:
        own = log.reopen()  # the stage's connection must not be used from a fork
        loop = asyncio.new_event_loop()
        same: dict[bytes | None, bytes | None] = {}
        while True:
            try:
                partition, offset, n = requests.recv()
            except (EOFError, OSError):
                return
            columns = loop.run_until_complete(own.read_columns(topic, partition, offset, n))
            # One object per distinct key: the pipe then carries each key once per chunk.
            keys = [same.setdefault(key, key) for key in columns.keys]
            pings = Pings.parse(
                topic,
                partition,
                columns.offsets,
                columns.timestamps,
                keys,
                columns.values,
                keep_values=False,  # (the stage looks up the few it needs: Pings.source)
            )
            replies.send(("pings", partition, offset, pings))
    except BaseException:  # (the stage gets the traceback)
        with contextlib.suppress(OSError):
            replies.send(("error", traceback.format_exc()))
