"""The state store on SQLite and PostgreSQL: facts and stage changes commit together."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import Mapper

from aggregates.facts import fact_of
from streams.state_store import (
    OrjsonTranscoder,
    ParkedRecord,
    PostgresStateStore,
    SqliteStateStore,
    StageCommit,
    StateStore,
    read_fact,
    stored_fact,
)
from tests.events.samples import SAMPLES

BOOKING = next(s for s in SAMPLES if s.type == "WorkOrderBooked")
ASSIGNED = next(s for s in SAMPLES if s.type == "TechnicianAssigned")


class StoreContract:
    def make(self) -> StateStore:
        raise NotImplementedError

    def test_a_batch_round_trips(self) -> None:
        store = self.make()
        try:
            facts = [fact_of(BOOKING, "WO-1", 1), fact_of(ASSIGNED, "WO-1", 2)]
            parked = ParkedRecord("WO-9", "ev-x", "fs.status", 2, 17, 1000, 2000, "r", "m", b"\xff")
            store.commit(
                "workorder",
                facts,
                StageCommit(
                    stage="s",
                    offsets={("fs.bookings", 0): 5, ("fs.status", 2): 18},
                    batch=1,
                    batch_inputs={"fs.bookings/0": (0, 5)},
                    kv={"registry": {"T-1": ["gas"]}},
                    parked_add=[parked],
                    positions={"T-1": (123, 42.5, 1.5, None, 90.0)},
                ),
            )
            assert store.facts("workorder", "WO-1") == facts
            assert [f.event() for f in store.facts("workorder", "WO-1")] == [BOOKING, ASSIGNED]
            assert list(store.all_facts("workorder")) == facts
            assert store.aggregate_ids("workorder") == ["WO-1"]
            state = store.load_stage("s")
            assert state.offsets == {("fs.bookings", 0): 5, ("fs.status", 2): 18}
            assert state.batch == 1
            assert state.kv == {"registry": {"T-1": ["gas"]}}
            assert state.parked == [parked]
            assert state.positions == {"T-1": (123, 42.5, 1.5, None, 90.0)}
            store.commit(
                "workorder",
                [],
                StageCommit(
                    stage="s",
                    offsets={("fs.bookings", 0): 6},
                    batch=2,
                    batch_inputs={"fs.bookings/0": (5, 6)},
                    parked_remove=["ev-x"],
                ),
            )
            state = store.load_stage("s")
            assert state.batch == 2 and state.parked == []
            assert state.offsets[("fs.bookings", 0)] == 6
            assert [b for b, _ in store.batches("s")] == [1, 2]
            assert store.load_stage("other").offsets == {}
        finally:
            store.close()

    def test_many_batches_commit_in_one_transaction_or_not_at_all(self) -> None:
        store = self.make()
        try:
            booked, assigned = fact_of(BOOKING, "WO-1", 1), fact_of(ASSIGNED, "WO-1", 2)
            store.commit_many(
                [
                    ("workorder", [booked], StageCommit("a", {("t", 0): 1}, 1, {"t/0": (0, 1)})),
                    ("technician", [], StageCommit("b", {("u", 0): 3}, 1, {"u/0": (0, 3)})),
                    ("workorder", [assigned], StageCommit("a", {("t", 0): 2}, 2, {"t/0": (1, 2)})),
                ]
            )
            assert store.facts("workorder", "WO-1") == [booked, assigned]
            assert store.load_stage("a").offsets == {("t", 0): 2}
            assert store.load_stage("a").batch == 2
            assert store.load_stage("b").offsets == {("u", 0): 3}
            with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
                store.commit_many(
                    [
                        ("workorder", [], StageCommit("a", {("t", 0): 3}, 3, {})),
                        ("workorder", [assigned], StageCommit("a", {("t", 0): 4}, 4, {})),
                    ]
                )
            assert store.load_stage("a").offsets == {("t", 0): 2}  # the first rolled back too
            assert store.load_stage("a").batch == 2
        finally:
            store.close()

    def test_batches_committed_together_leave_the_state_of_each_committed_alone(self) -> None:
        """One transaction writes each stage's offsets, kv and positions once (the last
        values): a stage's state is what committing its batches one by one leaves (here the
        stages ``f`` and ``w``, and their twins ``f2`` and ``w2`` committed one by one)."""

        def batches(twin: str) -> list[tuple[str, list[Any], StageCommit]]:
            parked = ParkedRecord("WO-9", "ev-x", "fs.status", 0, 3, 1000, 2000, "r", "m", b"x")
            f, w = "f" + twin, "w" + twin
            return [
                ("technician", [], StageCommit(f, {("g", 0): 4, ("h", 1): 2}, 1, {},
                    kv={"stream_time": 10, "registry": {"T-1": ["gas"]}}, parked_add=[parked],
                    positions={"T-1": (1, 42.5, 1.5, None, None),
                               "T-2": (1, 42.0, 1.0, 3.0, 9.0)})),
                ("workorder", [], StageCommit(w, {("t", 0): 1}, 1, {}, kv={"stream_time": 7})),
                ("technician", [], StageCommit(f, {("g", 0): 9}, 2, {}, kv={"stream_time": 20},
                    positions={"T-1": (2, 42.6, 1.6, 5.0, 80.0)}, parked_remove=["ev-x"])),
                ("technician", [], StageCommit(f, {("g", 0): 11}, 3, {"g/0": (9, 11)},
                    positions={"T-3": (3, 42.1, 1.1, None, None)})),
            ]  # fmt: skip

        store = self.make()
        try:
            store.commit_many(batches(""))
            for kind, facts, commit in batches("2"):
                store.commit(kind, facts, commit)
            for stage in ("f", "w"):
                assert store.load_stage(stage) == store.load_stage(stage + "2")
                assert store.batches(stage) == store.batches(stage + "2")
            state = store.load_stage("f")
            assert state.batch == 3
            assert state.offsets == {("g", 0): 11, ("h", 1): 2}
            assert state.kv == {"stream_time": 20, "registry": {"T-1": ["gas"]}}
            assert set(state.positions) == {"T-1", "T-2", "T-3"}
            assert state.positions["T-1"] == (2, 42.6, 1.6, 5.0, 80.0)
            assert state.parked == []
            assert store.load_stage("w").kv == {"stream_time": 7}
        finally:
            store.close()

    def test_a_failed_commit_stores_nothing(self) -> None:
        store = self.make()
        try:
            fact = fact_of(BOOKING, "WO-1", 1)
            store.commit("workorder", [fact], StageCommit("s", {("t", 0): 1}, 1, {}))
            with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
                # The same version again violates the facts' primary key: the whole batch,
                # offsets included, must roll back.
                store.commit("workorder", [fact], StageCommit("s", {("t", 0): 2}, 2, {}))
            assert store.load_stage("s").offsets == {("t", 0): 1}
            assert store.load_stage("s").batch == 1
        finally:
            store.close()


class TestSqliteStateStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "state.sqlite3"

    def make(self) -> StateStore:
        return SqliteStateStore(self.path)


@pytest.mark.postgres
class TestPostgresStateStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _url(self, postgres_url: str) -> None:
        self.url = postgres_url

    def make(self) -> StateStore:
        return PostgresStateStore(self.url)


def test_facts_are_stored_as_the_library_mapper_stores_them() -> None:
    mapper: Mapper[str] = Mapper(transcoder=OrjsonTranscoder())
    for i, event in enumerate(SAMPLES):
        fact = fact_of(event, f"agg-{i}", i + 1, "backfilled" if i % 2 else "applied")
        stored = stored_fact(fact)
        assert stored == mapper.to_stored_event(fact), event.type
        assert list(vars(stored).items()) == list(vars(mapper.to_stored_event(fact)).items())


def test_facts_are_read_back_as_the_library_mapper_reads_them() -> None:
    mapper: Mapper[str] = Mapper(transcoder=OrjsonTranscoder())
    for i, event in enumerate(SAMPLES):
        fact = fact_of(event, f"agg-{i}", i + 1, "backfilled" if i % 2 else "applied")
        stored = stored_fact(fact)
        args = (stored.originator_id, stored.originator_version, stored.topic, stored.state)
        read = read_fact(mapper, *args)
        by_mapper = mapper.to_domain_event(stored)
        assert read == by_mapper == fact, event.type
        assert list(vars(read).items()) == list(vars(by_mapper).items())
        assert read.event() == event


def test_a_fact_of_another_form_is_read_by_the_library_mapper() -> None:
    """A state with a class version (or of another topic) is the mapper's to read: it upcasts."""
    mapper: Mapper[str] = Mapper(transcoder=OrjsonTranscoder())
    stored = stored_fact(fact_of(BOOKING, "WO-1", 1))
    state = orjson.loads(stored.state)
    state["class_version"] = 1
    versioned = orjson.dumps(state)
    read = read_fact(mapper, "WO-1", 1, stored.topic, versioned)
    assert read == mapper.to_domain_event(replace(stored, state=versioned))
    assert "class_version" not in vars(read)
