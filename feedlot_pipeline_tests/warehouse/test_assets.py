"""historico_consumo and its checks, materialized against moto and a real PostgreSQL."""

from __future__ import annotations

import contextlib
import time
from datetime import date

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.ingestion.partitions import (
    farms_partitions,
)
from feedlot_pipeline_tests.helpers import (
    CLIENTS,
    NOW,
    batch,
    expected_valid,
    mat_metadata,
    materialize,
    record,
)


def check_results(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "fazenda_dois"])
        yield inst


def test_load_is_idempotent_and_checks_pass(aws, warehouse_url, instance) -> None:
    settings, _ = aws
    records = batch()  # five good records, the first twice, three bad ones
    land_records(
        records,
        source="sns",
        event_id="e1",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
        correlation_id="trace-e1",
    )
    first = materialize(instance, settings, warehouse_url)
    assert first.success
    meta = mat_metadata(first)
    valid = expected_valid(records)
    bad = len(records) - valid - 1
    assert meta["landed"] == len(records)
    assert (meta["inserted"], meta["unchanged"], meta["superseded"]) == (valid, 1, 0)
    assert meta["loaded"] == valid + 1 and meta["rejected"] == bad
    assert "duplicate" not in meta["rejected_by_reason"]  # a repeat is no rejection
    assert meta["dagster/row_count"] == valid
    assert check_results(first) == {"loaded_as_landed": True}

    # The same event redelivered as a new message: nothing new is written, nothing rejected
    # that was not wrong.
    land_records(
        records, source="sns", event_id="e2", clients=CLIENTS, settings=settings, received_at=NOW
    )
    second = materialize(instance, settings, warehouse_url)
    meta2 = mat_metadata(second)
    assert (meta2["inserted"], meta2["updated"]) == (0, 0)
    assert meta2["landed"] == 2 * len(records)
    # The bad records delivered again are the rejections already filed: unchanged too.
    assert meta2["unchanged"] == 2 * (valid + 1) + bad and meta2["rejected"] == bad
    assert all(check_results(second).values())

    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() == valid
        ids = conn.execute(text("SELECT id_curral FROM historico_consumo")).scalars().all()
        # The ingest's correlation id follows each record: the first landing's on every row
        # (the redelivery changed nothing), each landing's own on its rejections.
        row_traces = conn.execute(text("SELECT DISTINCT correlation_id FROM historico_consumo"))
        rejected_traces = conn.execute(
            text(
                "SELECT correlation_id, count(*) FROM historico_consumo_rejeitados "
                "GROUP BY correlation_id"
            )
        )
        assert row_traces.scalars().all() == ["trace-e1"]
        assert dict(rejected_traces.all()) == {"trace-e1": bad}  # filed once, first landing
        ledger = conn.execute(text("SELECT count(*) FROM historico_consumo_cargas")).scalar()
    engine.dispose()
    assert set(ids) == {"25994051003275"}  # 14-digit ids intact, as text
    assert ledger == 2  # one ledger row per raw object


def test_a_correction_landed_later_wins_and_the_old_version_is_kept(
    aws, warehouse_url, instance
) -> None:
    settings, _ = aws
    original = record(lote="7")
    land_records(
        [original],
        source="sns",
        event_id="v1",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    assert materialize(instance, settings, warehouse_url).success
    corrected = {**original, "consumo_real": 12.5}
    later = NOW.replace(hour=13)
    land_records(
        [corrected],
        source="sns",
        event_id="v2",
        clients=CLIENTS,
        settings=settings,
        received_at=later,
    )
    result = materialize(instance, settings, warehouse_url)
    meta = mat_metadata(result)
    assert (meta["updated"], meta["rejected"]) == (1, 0) and all(check_results(result).values())
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT consumo_real FROM historico_consumo")).scalar()
        kept = conn.execute(
            text("SELECT version_status, consumo_real FROM historico_consumo_versoes")
        ).all()
    engine.dispose()
    assert stored == 12.5 and [tuple(r) for r in kept] == [("replaced", original["consumo_real"])]
    # Rebuilding again changes nothing: the correction stays, nothing is archived twice.
    again = mat_metadata(materialize(instance, settings, warehouse_url))
    assert (again["updated"], again["superseded"], again["unchanged"]) == (0, 1, 1)


def test_a_rebuild_repairs_a_tampered_partition(aws, warehouse_url, instance) -> None:
    settings, _ = aws
    land_records(
        batch(), source="sns", event_id="e1", clients=CLIENTS, settings=settings, received_at=NOW
    )
    assert materialize(instance, settings, warehouse_url).success
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        tampered = conn.execute(
            text("UPDATE historico_consumo SET consumo_meta = consumo_meta + 1")
        ).rowcount
        conn.execute(text("DELETE FROM historico_consumo_rejeitados"))
    result = materialize(instance, settings, warehouse_url)
    assert result.success and all(check_results(result).values())
    assert mat_metadata(result)["updated"] == tampered
    with engine.connect() as conn:
        rejections = conn.execute(text("SELECT count(*) FROM historico_consumo_rejeitados"))
        assert rejections.scalar() == mat_metadata(result)["rejected"]
    engine.dispose()


def test_unrouted_partition_rejects_everything_with_reasons(aws, warehouse_url, instance) -> None:
    settings, _ = aws
    instance.add_dynamic_partitions(farms_partitions.name, ["_unrouted"])
    records = [record("FazendaX"), "not json at all", record(day="2023-13-45")]
    notices = land_records(
        records, source="sns", event_id="u", clients=CLIENTS, settings=settings, received_at=NOW
    )
    days = {n.dia for n in notices}
    for day in days:
        result = materialize(
            instance, settings, warehouse_url, "_unrouted", date.fromisoformat(day)
        )
        assert result.success
        meta = mat_metadata(result)
        assert meta["loaded"] == 0 and meta["rejected"] == meta["landed"]
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        codes = (
            conn.execute(
                text("SELECT reason_code FROM historico_consumo_rejeitados ORDER BY reason_code")
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert codes == sorted(["unknown_client", "not_an_object", "invalid_data"])


class LateForwarder:
    """A TCP port that refuses connections until ``open()``, then forwards to PostgreSQL: the
    warehouse as a load sees it across a restart."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        from feedlot_pipeline.local.services import free_port

        self.target = target
        self.port = free_port()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def open(self) -> None:
        import threading

        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(2)

    def close(self) -> None:
        self.server.close()


def _open_on_first_retry(instance, forwarder: LateForwarder, timeout: float = 120.0) -> None:
    retry = dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    deadline = time.monotonic() + timeout
    while not instance.get_event_records(retry, limit=1) and time.monotonic() < deadline:
        time.sleep(0.05)
    forwarder.open()


def test_a_load_waits_out_a_warehouse_restart_and_fails_fast_on_anything_else(
    aws, warehouse_url, instance, monkeypatch
) -> None:
    """Connection refused is retried with backoff (FEEDLOT_LOAD_RETRIES, read at run time) until
    the warehouse answers; the run then succeeds and the rows are there once."""
    import threading

    from sqlalchemy.engine import make_url

    settings, _ = aws
    land_records(
        [record()],
        source="sns",
        event_id="e1",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    url = make_url(warehouse_url)
    forwarder = LateForwarder((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=forwarder.port).render_as_string(hide_password=False)
    monkeypatch.setenv("FEEDLOT_LOAD_RETRIES", "6")
    monkeypatch.setenv("FEEDLOT_LOAD_RETRY_DELAY_SECONDS", "0.2")
    # "Restarting" until the load has been refused once: opened on its first retry, not after a
    # fixed time (on a loaded machine the run reached the warehouse after any fixed delay).
    threading.Thread(target=_open_on_first_retry, args=(instance, forwarder), daemon=True).start()
    try:
        result = materialize(instance, settings, through, retries=True)
    finally:
        forwarder.close()
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert 1 <= len(retried) <= 6
    assert mat_metadata(result)["inserted"] == 1

    # Out of retries: the step fails with the warehouse's own error, after exactly that many.
    monkeypatch.setenv("FEEDLOT_LOAD_RETRIES", "2")
    down = LateForwarder(("127.0.0.1", 9))  # never opened
    gone = url.set(host="127.0.0.1", port=down.port).render_as_string(hide_password=False)
    failed = materialize(instance, settings, gone, retries=True)
    assert not failed.success
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in failed.all_events) == 2
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "OperationalError" in str(failure.event_specific_data.error)

    # Not transient (the warehouse has no such database): no retry at all.
    missing = url.set(database="no_such_database_here").render_as_string(hide_password=False)
    wrong = materialize(instance, settings, missing, retries=True)
    assert not wrong.success
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in wrong.all_events)
