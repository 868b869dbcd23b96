"""The ETA stage as a follower process (streams/follower.py): the same outputs and state as
one process, a failure in it fails the run, and a restart after that failure ends the same."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from streams import follower
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.eta_stage import EtaProcessor
from streams.pipeline import Stage, run_until_idle
from streams.replay import read_topic
from streams.state_store import STATE_FILE, SqliteStateStore
from tests.support import embedded_day, graph, run, run_python, simulated_day, start_python


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower is made only with a core to spare: these tests make one on any machine."""
    monkeypatch.setattr(follower, "cores", lambda: 2)


def _stages(log: Any, store: SqliteStateStore, directory: Path) -> list[Stage]:
    stages = build_stages(log, store, Config(data_dir=directory), graph())
    return [s for s in stages if s.name != "projections"]


async def _process(directory: Path, *, parallel: bool) -> list[Stage]:
    log = await open_log(Config(data_dir=directory))
    store = SqliteStateStore.in_dir(directory)
    try:
        stages = _stages(log, store, directory)
        await run_until_idle(stages, parallel=parallel)
        return stages
    finally:
        store.close()
        await log.close()


async def _everything(directory: Path) -> dict[str, Any]:
    """Every record of every topic, and every row of every table of the state store."""
    log = await open_log(Config(data_dir=directory))
    try:
        out: dict[str, Any] = {t: await read_topic(log, t) for t in sorted(await log.topics())}
    finally:
        await log.close()
    db = sqlite3.connect(directory / STATE_FILE)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            out[f"state:{table}"] = sorted(db.execute(f'SELECT * FROM "{table}"').fetchall())
    finally:
        db.close()
    return out


def test_the_follower_is_used_only_where_nothing_before_it_reads_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> tuple[bool, bool]:
        log = await open_log(Config(data_dir=tmp_path))
        store = SqliteStateStore.in_dir(tmp_path)
        try:
            every = build_stages(log, store, Config(data_dir=tmp_path), graph())
            # The projections read fs.eta and fs.alerts: with them, one process.
            return follower.can_follow(_stages(log, store, tmp_path)), follower.can_follow(every)
        finally:
            store.close()
            await log.close()

    without_projections, with_projections = run(body())
    assert without_projections
    assert not with_projections
    monkeypatch.setattr(follower, "cores", lambda: 1)
    assert not run(body())[0]  # on one core it would only take turns with the others


def test_a_follower_gives_the_same_records_and_state_as_one_process(tmp_path: Path) -> None:
    sim = simulated_day()
    one, two = tmp_path / "one", tmp_path / "two"

    async def body() -> tuple[dict[str, Any], dict[str, Any], list[Stage], list[Stage]]:
        for d in (one, two):
            await (await embedded_day(d, sim)).close()
        alone = await _process(one, parallel=False)
        followed = await _process(two, parallel=True)
        return await _everything(one), await _everything(two), alone, followed

    a, b, alone, followed = run(body())
    assert len(a["fs.eta"]) > 100 and a["state:fs_batches"]
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    # The totals the follower counted came back to the stage left here, which is detached.
    assert followed[-1].totals == alone[-1].totals
    assert followed[-1].detached is not None
    with pytest.raises(RuntimeError, match="follower"):
        run(followed[-1].step())


def test_a_failure_in_the_follower_fails_the_run_and_a_restart_ends_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulated_day()
    clean, failed = tmp_path / "clean", tmp_path / "failed"
    original = EtaProcessor.process_batch
    calls = [0]

    def failing(self: EtaProcessor, *args: Any) -> Any:
        calls[0] += 1  # counted in the follower's process (its copy of this list)
        if calls[0] == 40:
            raise ValueError("planted failure in batch 40")
        return original(self, *args)

    async def body() -> tuple[dict[str, Any], dict[str, Any], int]:
        for d in (clean, failed):
            await (await embedded_day(d, sim)).close()
        await _process(clean, parallel=True)
        monkeypatch.setattr(EtaProcessor, "process_batch", failing)
        with pytest.raises(RuntimeError, match="planted failure in batch 40"):
            await _process(failed, parallel=True)
        store = SqliteStateStore.in_dir(failed)
        try:
            stopped_at = store.load_stage("eta").batch
        finally:
            store.close()
        monkeypatch.setattr(EtaProcessor, "process_batch", original)
        await _process(failed, parallel=True)
        return await _everything(clean), await _everything(failed), stopped_at

    a, b, stopped_at = run(body())
    assert 0 < stopped_at < 40  # committed up to a group before the failure, not past it
    assert calls[0] == 0  # the failing copy ran in the follower only
    for key in a:
        assert a[key] == b[key], key


KILL_RUNNER = """
import asyncio, multiprocessing, sys
from pathlib import Path
from streams import follower
from streams.bootstrap import build_stages, open_log, open_state_store
from streams.config import Config
from streams.pipeline import run_until_idle

follower.cores = lambda: 2

async def main(data_dir):
    config = Config(data_dir=Path(data_dir), batch_size=400)
    log = await open_log(config)
    store = open_state_store(config.data_dir, None)
    stages = [s for s in build_stages(log, store, config) if s.name != "projections"]
    # Say when a group is committed, and which process follows.
    commit_many = store.commit_many
    def committed(*args, **kwargs):
        commit_many(*args, **kwargs)
        pids = " ".join(str(p.pid) for p in multiprocessing.active_children())
        print("committed", pids, flush=True)
    store.commit_many = committed
    await run_until_idle(stages, parallel=True)
    print("done", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("kill_after", [1, 3])
def test_kill_9_of_the_runner_ends_its_follower_and_a_restart_equals_a_clean_run(
    tmp_path: Path, kill_after: int
) -> None:
    sim = simulated_day()
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    for d in (crashed, clean):
        run(_close_after(embedded_day(d, sim)))
    proc = start_python(KILL_RUNNER, str(crashed))
    assert proc.stdout is not None
    followers: set[int] = set()
    seen = 0
    while seen < kill_after:
        line = proc.stdout.readline()
        assert line.startswith("committed"), f"the runner ended before it could be killed: {line}"
        followers.update(int(p) for p in line.split()[1:])
        seen += 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert followers, "no follower process was running"
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in followers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in followers), "the follower outlived its runner"
    run_python(KILL_RUNNER, str(crashed))  # the restart
    run_python(KILL_RUNNER, str(clean))
    a, b = run(_everything(clean)), run(_everything(crashed))
    assert len(a["fs.eta"]) > 100
    for key in a:
        assert a[key] == b[key], key


async def _close_after(opening: Any) -> None:
    await (await opening).close()
