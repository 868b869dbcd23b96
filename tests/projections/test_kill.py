"""kill -9 in the middle of a projection batch, then a restart: the tables equal a clean
rebuild (nothing counted twice, nothing lost), and those of a pipeline that never crashed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streams.projection_store import SqliteProjectionStore
from tests.projections.compare import rebuild, state, tables
from tests.projections.conftest import ProcessedDay
from tests.support import embedded_day, run

REPO = Path(__file__).resolve().parents[2]

RUNNER = """
import asyncio, sys, time
from contextlib import contextmanager
from pathlib import Path
from streams import projection_store
from streams.bootstrap import build_stages, open_log, open_state_store
from streams.config import Config
from streams.pipeline import run_until_idle

pause_at = int(sys.argv[2])
original = projection_store.SqliteProjectionStore._transaction
count = 0

@contextmanager
def transaction(self):
    # the projection's transaction: rows written, then (at transaction number pause_at)
    # a pause before COMMIT, during which the test kills the process
    global count
    count += 1
    with original(self) as cursor:
        yield cursor
        if count == pause_at:
            print("rows-written", flush=True)
            time.sleep(60)
    print("committed", flush=True)

projection_store.SqliteProjectionStore._transaction = transaction

async def main(data_dir):
    config = Config(data_dir=Path(data_dir))
    log = await open_log(config)
    store = open_state_store(config.data_dir, None)
    stages = build_stages(log, store, config)
    for stage in stages:
        if stage.name == "projections":
            # commits at least every 500 records, also while catching up: many transactions
            stage.max_batch = stage.catchup_batch = 500
    await run_until_idle(stages)
    print("done", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def _runner(data_dir: Path, pause_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(data_dir), str(pause_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("pause_at", [3, 20])
def test_kill_9_mid_batch_then_restart_equals_a_clean_rebuild(
    processed_day: ProcessedDay, tmp_path: Path, pause_at: int
) -> None:
    crashed = tmp_path / "crashed"

    async def prepare() -> None:
        log = await embedded_day(crashed, processed_day.sim)
        await log.close()

    run(prepare())
    proc = _runner(crashed, pause_at)
    assert proc.stdout is not None and proc.stderr is not None
    committed = 0
    while True:
        line = proc.stdout.readline()
        assert line, f"the runner ended before it could be killed: {proc.stderr.read()[-2000:]}"
        if line.startswith("rows-written"):
            break
        committed += line.startswith("committed")
    os.kill(proc.pid, signal.SIGKILL)  # inside the batch's transaction: rows written, no COMMIT
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert committed == pause_at - 1

    restart = _runner(crashed, 0)
    out, err = restart.communicate(timeout=300)
    assert restart.returncode == 0, err[-2000:]
    assert out.rstrip().endswith("done")

    rebuilt_path = tmp_path / "rebuilt.sqlite3"
    rebuild(crashed, lambda: SqliteProjectionStore(rebuilt_path), None)
    after_crash = SqliteProjectionStore.in_dir(crashed)
    rebuilt = SqliteProjectionStore(rebuilt_path)
    never_crashed = SqliteProjectionStore.in_dir(processed_day.data_dir)
    try:
        crash_tables = tables(after_crash)
        assert crash_tables == tables(rebuilt)
        assert state(after_crash) == state(rebuilt)
        # and the same numbers as the pipeline that never crashed (whose log holds no
        # repeated outputs: offsets may differ, nothing else)
        crash_tables.pop("kp_offsets")
        clean_tables = tables(never_crashed)
        clean_tables.pop("kp_offsets")
        assert crash_tables == clean_tables
    finally:
        after_crash.close()
        rebuilt.close()
        never_crashed.close()


def test_a_stage_stopped_while_deferring_its_commit_resumes_where_it_had_read(
    processed_day: ProcessedDay, tmp_path: Path
) -> None:
    """While catching up, the stage folds several windows before it commits; a stage that
    stops then (nothing flushed since the last commit) restarts at the records it had read,
    not at the committed offsets (so the pipeline's rounds resume where they stopped), with
    the tables of a clean rebuild in the end."""
    from streams.embedded import EmbeddedLog
    from streams.projection_stage import ProjectionStage
    from tests.support import run

    path = tmp_path / "stopped.sqlite3"
    window = 300_000

    async def body() -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        log = EmbeddedLog.open(processed_day.data_dir)
        first = ProjectionStage(
            log, lambda: SqliteProjectionStore(path), max_batch=5_000, catchup_batch=5_000
        )
        committed: dict[tuple[str, int], int] = {}
        for _ in range(200):
            head = await first.next_time()
            assert head is not None, "the stage never deferred a commit"
            await first.step((head // window + 1) * window)
            assert first.store is not None
            committed = {tp: o for tp, o in first.store.offsets().items() if o}
            if committed and committed != {tp: o for tp, o in first.positions.items() if o}:
                break
        read = first.positions
        first.close()  # stopped: what was folded since the last commit is not flushed
        second = ProjectionStage(
            log, lambda: SqliteProjectionStore(path), max_batch=5_000, catchup_batch=5_000
        )
        await second.start()
        resumed = second.positions
        await second.run_until_idle()
        second.close()
        await log.close()
        assert resumed == read
        return committed, read

    committed, read = run(body())
    assert committed != {tp: o for tp, o in read.items() if o}
    rebuilt = tmp_path / "rebuilt.sqlite3"
    rebuild(processed_day.data_dir, lambda: SqliteProjectionStore(rebuilt), None)
    stopped, clean = SqliteProjectionStore(path), SqliteProjectionStore(rebuilt)
    try:
        assert tables(stopped) == tables(clean)
        assert state(stopped) == state(clean)
    finally:
        stopped.close()
        clean.close()
