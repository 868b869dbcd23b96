"""The last stage of each round in a process of its own, one round behind the others.

:func:`streams.pipeline.run_until_idle` runs its stages in rounds, one after the other, on one
core. The last stage of a round (the ETA engine) reads what the stages before it produced in
the round, but none of them reads what it produces: so it can work on round ``k`` while the
others work on round ``k + 1``, on a second core. A *follower* does that: a process forked from
the runner, with its own connection to the log, that is sent each round as the others finish
it, and does exactly what the stage would have done in one process:

* **The same batches.** It is sent the round's horizon and the end offsets of its inputs as
  they stood when the other stages had finished the round, and cuts its batch from the records
  below those offsets only (:meth:`streams.pipeline.Stage.step` with ``ends``): what it would
  have read had it run right then. A window in which the others had nothing to read but it
  had (a round they would have idled through) is stepped on its own, before the round's. After
  the last round, it is stepped until it has nothing left, as the rounds would have gone on.
* **After a crash, the same batches.** The others may be up to :data:`MAX_AHEAD` rounds
  ahead of it, with their outputs on the log. Were it then cut from the log as it stands, a
  batch would take records appended rounds later (a late record, stamped inside its window).
  So each round's horizon and end offsets are recorded on the log (a batch mark of their
  own, appended after the others' outputs of the round), and a restarted follower goes
  through those rounds again first, in order: rounds it had done find nothing left in their
  windows, the others cut exactly as they would have been.
* **The same state.** Its batches are not committed by the follower: their commits are sent
  back and the runner commits those it has in the transaction of its next group of batches
  (:class:`streams.pipeline.CommitGroup`), after syncing the log (which makes what the
  follower appended before durable too: one write-ahead log). So the follower's committed
  state may be some rounds behind the others'; a restart goes through the recorded rounds
  as above, and batches appended but not committed are processed again from the log's batch
  marks, as in one process.

So its outputs, to the byte, and the state stored, to the row, are those of one process
(tested). The follower exits with the run, or as soon as the runner goes away (its end of the
pipe closes). A failure in it fails the run, with the follower's traceback.

The stage object left in the runner's process is *detached* afterwards: its processor's state
went on in the follower, so it refuses to step again (build the stages anew for another run).
Used where the stages are run once over a backlog without the projections (``fieldstream
eval-eta``, on a simulated day or on traces; the benchmarks' upstream runs); only with the
embedded log, and where the platform can fork. The whole pipeline (``fieldstream process``,
``fieldstream replay``) cannot use it: the projection stage reads the ETA stage's outputs,
and a day's close must not be published before the ETA stage has finished the day.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sys
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from streams.log import BatchMark
from streams.pipeline import BatchStats, Ends, Stage, horizon_after

_HORIZON = "horizon"
"""The entry of a round's mark that holds its horizon (the others are ``topic/partition``)."""

MAX_AHEAD = 24
"""Rounds the runner may be ahead of its follower before it waits for it (a bound on what the
pipe holds, and on how far behind the others its committed state may be)."""


def can_follow(stages: Sequence[Any]) -> bool:
    """Whether the last of ``stages`` may run as a follower of the others: a :class:`Stage`
    on a log that can be reopened from a fork, whose outputs no other stage reads."""
    if len(stages) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if cores() < 2:
        return False  # it would only take turns with the others
    last = stages[-1]
    outputs = getattr(getattr(last, "processor", None), "outputs", None)
    if not isinstance(last, Stage) or outputs is None:
        return False
    if not hasattr(last.log, "reopen") or not hasattr(last.log, "quiet"):
        return False
    read = {t for s in stages[:-1] for t in _inputs(s)}
    return not read & set(outputs)


def cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def stop(process: Any, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for a process told to end (its pipe closed) to exit,
    then kill it."""
    process.join(timeout=timeout)
    if process.is_alive():
        process.kill()
        process.join()


def _inputs(stage: Any) -> tuple[str, ...]:
    """The topics a stage reads (a :class:`Stage`'s processor's, or its own)."""
    processor = getattr(stage, "processor", stage)
    return tuple(processor.inputs)


class Follower:
    """The runner's side of a follower (see the module docstring)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.sent = 0
        """Rounds sent."""
        self.done = 0
        """Rounds the follower has reported done."""
        self._rounds = f"{stage._mark}/rounds"
        """The name each round's horizon and ends go under on the log."""
        self._recorded: list[tuple[int, Ends]] = []
        """The rounds recorded by earlier runs (horizon, ends), in order, to send first."""
        self._next_round = 1
        """The number the next round is recorded under (runs go on from earlier ones)."""
        self.error: RuntimeError | None = None
        """Set once the follower has failed or gone (nothing more is asked of it)."""
        self._conn: _Duplex | None = None
        self._process: Any = None

    async def start(self) -> None:
        """Load the stage's state here, then fork the follower (the stage's state and any
        batches to process again go with it)."""
        stage = self.stage
        await stage.start()
        recorded = []
        if stage.log.keeps_marks:
            marks = await stage.log.marks(self._rounds, after=-1)
            for inputs in marks.values():  # in round order
                ends: Ends = {}
                for name, (_first, end) in inputs.items():
                    if name == _HORIZON:
                        continue
                    topic, _, part = name.rpartition("/")
                    ends[(topic, int(part))] = end
                recorded.append((inputs[_HORIZON][0], ends))
            self._next_round = max(marks, default=0) + 1
        # Where the log stands as the run starts: the first round's "round before" (rounds
        # recorded by earlier runs come first, and bring their own).
        before = None if recorded else await stage.input_ends()
        context = multiprocessing.get_context("fork")
        # Two one-way pipes, not a socket pair: what the follower wrote last (its failure)
        # stays readable after it has exited, whatever was left unread on its side.
        their_reader, our_writer = context.Pipe(duplex=False)
        our_reader, their_writer = context.Pipe(duplex=False)
        ours = _Duplex(our_reader, our_writer)
        theirs = _Duplex(their_reader, their_writer)
        sys.stdout.flush()
        sys.stderr.flush()
        with stage.log.quiet():  # type: ignore[attr-defined]
            process = context.Process(
                target=_serve,
                args=(stage, theirs, ours, before),
                name=f"fieldstream {stage.name}",
                daemon=True,
            )
            process.start()
        theirs.close()
        self._conn = ours
        self._process = process
        stage.detached = "its state went on in a follower process; build the stages anew"
        self._recorded = recorded

    def replay(self, handle: Any) -> None:
        """Send the rounds earlier runs recorded, as they were (before any new round): up to
        where those runs got, the follower then cuts its batches as it did (or would have,
        had it got as far), and the rounds the others go through again (their batches
        processed again, appending nothing) find nothing left in their windows."""
        for horizon, ends in self._recorded:
            self.send_round(horizon, ends)
            self.poll(handle, until=self.sent - MAX_AHEAD)
        self._recorded = []

    async def record_round(self, horizon: int) -> Ends:
        """The end offsets of the stage's inputs now, after the others' round of ``horizon``:
        recorded on the log with the horizon, in a batch mark of their own (see the module
        docstring), under the next round number."""
        stage = self.stage
        ends = await stage.input_ends()
        if stage.log.keeps_marks:
            inputs = {f"{t}/{p}": (0, end) for (t, p), end in ends.items()}
            inputs[_HORIZON] = (horizon, horizon)
            mark = BatchMark(self._rounds, self._next_round, inputs)
            await stage.log.append([], durable=stage.held is None, mark=mark)
            self._next_round += 1
        return ends

    def send_round(self, horizon: int, ends: Ends) -> None:
        self._send(("round", horizon, ends))
        self.sent += 1

    def poll(self, handle: Any, *, until: int | None = None) -> None:
        """Take the follower's reports of rounds done (``handle(stats)`` for each batch it
        processed): those already there, or, with ``until``, waiting until that many rounds
        are done."""
        assert self._conn is not None
        while (until is not None and self.done < until) or self._conn.poll():
            self._take(self._receive(), handle)

    def sync(self, handle: Any) -> None:
        """Wait until every round sent is done and what the follower appended is synced; its
        batches' commits are then in the stage's ``held`` list, for the group commit."""
        self._send(("sync",))
        while True:
            message = self._receive()
            if message[0] == "synced":
                return
            self._take(message, handle)

    def drain(self, ends: Ends, handle: Any) -> None:
        """After the last round: the follower steps until it has nothing left below ``ends``
        (the rounds the others would have idled through)."""
        self._send(("drain", ends))
        while True:
            message = self._receive()
            self._take(message, handle)
            if message[0] == "drained":
                return

    def stop(self) -> None:
        """Ask the follower for its totals and positions (kept on the stage) and wait for it
        to exit."""
        if self._conn is None:
            return
        try:
            self._send(("stop",))
            message = self._receive()
            if message[0] == "stopped":
                totals, positions, batch = message[1:]
                self.stage.totals = totals
                self.stage.take_progress(positions, batch)
        finally:
            self.close()

    def close(self) -> None:
        """End the follower at once if it still runs (after a failure of the run)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            stop(self._process, timeout=10)
            self._process = None

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self._conn is not None
        try:
            self._conn.send(message)
        except OSError:
            # It has gone: what it said last (its failure, most likely) is still to be read.
            while True:
                self._receive()

    def _receive(self) -> tuple[Any, ...]:
        assert self._conn is not None
        if self.error is not None:
            raise self.error
        try:
            message: tuple[Any, ...] = self._conn.recv()
        except EOFError:
            code = self._process.exitcode if self._process is not None else None
            self.error = RuntimeError(
                f"stage {self.stage.name}: its follower process ended unexpectedly "
                f"(exit code {code})"
            )
            raise self.error from None
        if message[0] == "error":
            self.error = RuntimeError(
                f"stage {self.stage.name} failed in its follower:\n{message[1]}"
            )
            raise self.error
        return message

    def _take(self, message: tuple[Any, ...], handle: Any) -> None:
        """Take a report of the follower's steps: their batches' commits (kept with the stage,
        for the group commit) and stats (``handle(stats)`` each)."""
        kind, stats, held = message
        if self.stage.held is not None:
            self.stage.held.extend(held)
        for s in stats:
            handle(s)
        if kind == "round":  # a round sent (not the steps of the drain)
            self.done += 1


class _Duplex:
    """Both ends of a conversation: one pipe to read, one to write."""

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, message: Any) -> None:
        self.writer.send(message)

    def recv(self) -> Any:
        return self.reader.recv()

    def poll(self) -> bool:
        return self.reader.poll()

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _serve(stage: Stage, conn: _Duplex, runners: _Duplex, before: Ends | None) -> None:
    """The follower's process: serve the runner until it stops or goes away."""
    runners.close()  # so that the runner's end of the pipe closes when the runner exits
    try:
        asyncio.run(_follow(stage, conn, before))
    except EOFError:
        pass  # the runner went away: what was not committed is processed again next time
    except BaseException:
        with contextlib.suppress(OSError):  # the runner may have gone too
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
        # Leave without the runner's exit handlers (its connections are not ours to close).
        os._exit(0)


async def _follow(stage: Stage, conn: _Duplex, before: Ends | None) -> None:
    stage.log = stage.log.reopen()  # type: ignore[attr-defined]
    stage.detached = None
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "round":
                _, horizon, ends = message
                stats = await _round(stage, horizon, before or ends, ends)
                before = ends
                conn.send(("round", stats, _take_held(stage)))
            elif kind == "sync":
                await stage.log.sync()
                conn.send(("synced",))
            elif kind == "drain":
                stats = await _round(stage, None, message[1], message[1])
                conn.send(("drained", stats, _take_held(stage)))
            elif kind == "stop":
                conn.send(("stopped", stage.totals, *stage.progress()))
                return
    finally:
        await stage.log.close()


def _take_held(stage: Stage) -> list[Any]:
    """The commits the stage holds (for the runner to commit), handed over once."""
    if not stage.held:
        return []
    out = list(stage.held)
    stage.held.clear()
    return out


async def _round(stage: Stage, horizon: int | None, before: Ends, ends: Ends) -> list[BatchStats]:
    """Step ``stage`` as one process would have through the round of ``horizon``, ``before``
    being the ends of the round before it and ``ends`` its own (without a horizon: every
    round left, until nothing is left below ``ends``)."""
    stats: list[BatchStats] = []
    # Batches to process again after a restart are cut as they were, whatever the horizon:
    # one process gets through them first too (the others idle meanwhile).
    while stage.redo_pending:
        stats.append(await stage.step(horizon, ends))
    while True:
        # One process would have started the round with a horizon of its own, had its head,
        # on the log as it stood then, been in an earlier window than the others' heads: a
        # round they idled through.
        head = await stage.next_time(before)
        if head is None or (horizon is not None and horizon_after(head) >= horizon):
            break
        stats.append(await stage.step(horizon_after(head), before))
    if horizon is not None:
        stats.append(await stage.step(horizon, ends))
    return [s for s in stats if s.records]
