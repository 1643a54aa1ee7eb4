"""The load path: reconciliation, duplicates, partition mismatch, reruns, bulk loads."""

from __future__ import annotations

import gc
import threading
from datetime import date, datetime, timezone

import orjson
import pytest
import sqlalchemy as sa

from feedlot_pipeline.core.records import DEFAULT_RULE
from feedlot_pipeline.tools.synthetic import UNKNOWN_CLIENT, generate, write_jsonl
from feedlot_pipeline.warehouse.loader import PartitionLoader, iter_file_lines, load_file
from feedlot_pipeline.warehouse.store import Warehouse

DAY = date(2023, 1, 1)
NOW = datetime(2023, 1, 5, 12, 0, tzinfo=timezone.utc)
HOSTILE = "x'); DROP TABLE clientes;--"


def key(event: str, fazenda: str = "fazenda_um", day: date = DAY) -> str:
    return f"historico_diario/{fazenda}/{day:%Y/%m/%d}/sns-{event}.jsonl"


def lines(records: list) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


def day_records(n: int = 20) -> list[dict]:
    """``n`` distinct FazendaUm records of DAY."""
    records = [
        r for r in generate(4 * n, seed=1, farms=("FazendaUm",)) if r["data"][:10] == str(DAY)
    ]
    assert len(records) >= n
    return records[:n]


def partition_loader(wh: Warehouse, **kw) -> PartitionLoader:
    return PartitionLoader(wh, rule=DEFAULT_RULE, partition=("fazenda_um", DAY), row_ts=NOW, **kw)


def count(wh: Warehouse, sql: str, **params) -> int:
    with wh.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def test_partition_load_reconciles_and_reruns_write_nothing_twice(wh: Warehouse) -> None:
    good = day_records(12)
    other_day = {**good[0], "data": "2023-01-02 00:00:00 UTC"}
    other_farm = {**good[1], "cod_cliente": "FazendaDois"}
    bad = [
        {**good[2], "peso_medio": -1},
        {k: v for k, v in good[3].items() if k != "id_raca"},
        {**good[4], "cod_cliente": HOSTILE},
    ]
    first_object = [*good, good[5], other_day, other_farm, *bad]  # good[5] twice in one object
    second_object = [*good[:3], b"not json at all", "[1, 2]"]  # a redelivery plus junk
    redelivered = 1 + 3  # identical versions: unchanged, never rejections

    def run() -> object:
        loader = partition_loader(wh)
        loader.feed(key("e1"), lines(first_object))
        loader.feed(key("e2"), [*lines(second_object[:3]), second_object[3], b"[1, 2]"])
        return loader.finish()

    report = run()
    landed = len(first_object) + len(second_object)
    assert report.landed == landed
    assert report.inserted == len(good) and report.unchanged == redelivered
    assert report.loaded == len(good) + redelivered
    assert report.rejected == landed - report.loaded
    assert report.landed == report.loaded + report.rejected
    assert report.rejected_by_code == {
        "partition_mismatch": 2,
        "non_positive": 1,
        "missing_field": 1,
        "unknown_client": 1,
        "invalid_json": 1,
        "not_an_object": 1,
    }
    assert wh.partition_row_counts([("fazenda_um", DAY)])[("fazenda_um", DAY)] == len(good)
    assert sum(wh.rejection_counts([key("e1"), key("e2")]).values()) == report.rejected
    assert count(wh, "SELECT count(*) FROM clientes") == 2  # the hostile code was only data
    e1 = report.objects[key("e1")]
    assert (e1.lines, e1.inserted, e1.unchanged, e1.rejected) == (18, 12, 1, 5)
    with wh.engine.connect() as conn:
        hostile = conn.execute(
            sa.text(
                "SELECT cod_cliente, raw_record FROM historico_consumo_rejeitados "
                "WHERE reason_code = 'unknown_client'"
            )
        ).one()
    assert hostile[0] == HOSTILE and orjson.loads(hostile[1])["cod_cliente"] == HOSTILE

    again = run()
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, report.loaded)
    assert again.rejected_by_code == report.rejected_by_code
    assert count(wh, "SELECT count(*) FROM historico_consumo_rejeitados") == report.rejected
    assert count(wh, "SELECT count(*) FROM historico_consumo") == len(good)


def test_unknown_client_is_rejected_never_defaulted(wh: Warehouse) -> None:
    loader = partition_loader(wh)
    loader.feed(key("e1"), lines([{**day_records(1)[0], "cod_cliente": UNKNOWN_CLIENT}]))
    report = loader.finish()
    assert (report.loaded, report.rejected_by_code) == (0, {"unknown_client": 1})
    assert count(wh, "SELECT count(*) FROM historico_consumo") == 0


def test_chunks_background_and_foreground_agree(wh: Warehouse, tmp_path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", 3_000, seed=2, bad_fraction=0.05)
    reports = []
    for background in (True, False):
        loader = PartitionLoader(wh, rule=DEFAULT_RULE, chunk_rows=700, background=background)
        loader.feed("bulk/r.jsonl", iter_file_lines(path))
        reports.append(loader.finish())
    first, second = reports
    assert first.landed == 3_000 == first.loaded + first.rejected
    assert first.inserted == first.loaded and second.unchanged == first.loaded
    assert first.rejected_by_code == second.rejected_by_code
    assert count(wh, "SELECT count(*) FROM historico_consumo") == first.loaded
    # Bulk rejections are filed under _unrouted on the load's day (the key is not a raw key).
    rejected = count(
        wh,
        "SELECT count(*) FROM historico_consumo_rejeitados WHERE fazenda = '_unrouted'",
    )
    assert rejected == first.rejected


def test_reload_switches_to_merge_and_counts_mixed_chunks(wh: Warehouse, tmp_path) -> None:
    records = list(generate(2_000, seed=4))
    half = tmp_path / "half.jsonl"
    half.write_bytes(b"\n".join(lines(records[::2])) + b"\n")
    full = tmp_path / "full.jsonl"
    full.write_bytes(b"\n\n".join(lines(records)) + b"\r\n\n")  # blank lines are skipped
    first = load_file(wh, half, chunk_rows=300, rule=DEFAULT_RULE)
    assert first.inserted == 1_000
    second = load_file(wh, full, chunk_rows=300, rule=DEFAULT_RULE)
    assert (second.landed, second.inserted, second.updated, second.unchanged) == (
        2_000,
        1_000,
        0,
        1_000,
    )
    third = load_file(wh, full, chunk_rows=300, rule=DEFAULT_RULE)
    assert (third.inserted, third.updated, third.unchanged) == (0, 0, 2_000)


def test_object_rejections_are_filed_under_the_raw_key_partition(wh: Warehouse) -> None:
    where = key("b1", "fazenda_dois", date(2023, 3, 4))
    loader = PartitionLoader(wh, rule=DEFAULT_RULE, row_ts=NOW)
    loader.feed(where, [b"{}", b"oops"])
    with pytest.raises(ValueError, match="fed twice"):
        loader.feed(where, [b"{}"])
    assert loader.finish().rejected == 2
    with wh.engine.connect() as conn:
        filed = conn.execute(
            sa.text("SELECT DISTINCT fazenda, dia FROM historico_consumo_rejeitados")
        ).all()
    assert [tuple(r) for r in filed] == [("fazenda_dois", date(2023, 3, 4))]
    reload = PartitionLoader(wh, rule=DEFAULT_RULE, row_ts=NOW)
    reload.feed(where, [b"{}"])  # the object read again: its rejections are replaced
    assert reload.finish().rejected == 1
    assert wh.rejection_counts([where]) == {where: 1}


def test_within_one_load_the_later_version_wins(wh: Warehouse) -> None:
    record = day_records(1)[0]
    corrected = {**record, "consumo_real": record["consumo_real"] + 2}
    loader = partition_loader(wh)
    loader.feed(key("e1"), lines([record, record]))  # the same version twice: unchanged
    loader.feed(key("e2"), lines([corrected]))  # a correction, landed later
    report = loader.finish()
    assert (report.inserted, report.unchanged, report.superseded, report.rejected) == (1, 1, 1, 0)
    assert count(wh, "SELECT consumo_real FROM historico_consumo") == corrected["consumo_real"]
    assert count(wh, "SELECT count(*) FROM historico_consumo_versoes") == 1
    assert report.objects[key("e1")].superseded == 1


def test_loader_errors_surface(wh: Warehouse) -> None:
    loader = partition_loader(wh)
    with wh.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE historico_consumo"))
    loader.feed(key("e1"), lines(day_records(5)))
    with pytest.raises(Exception, match="historico_consumo"):
        loader.finish()
    with pytest.raises(RuntimeError):
        loader.feed(key("e2"), [])
    with pytest.raises(ValueError, match="longer than 512"):
        partition_loader(wh).feed("k" * 513, [])


def test_abandoned_loader_stops_its_writer(pg_wh: Warehouse) -> None:
    before = threading.active_count()
    loader = PartitionLoader(pg_wh, rule=DEFAULT_RULE)
    loader.feed("bulk/x.jsonl", lines(day_records(3)))
    writer = loader._writer
    del loader
    gc.collect()
    assert writer is not None
    writer.join(timeout=10)
    assert not writer.is_alive() and threading.active_count() <= before


def test_partition_must_be_a_farm(pg_wh: Warehouse) -> None:
    with pytest.raises(ValueError, match="invalid fazenda"):
        PartitionLoader(pg_wh, rule=DEFAULT_RULE, partition=("Fazenda Um", DAY))


def test_iter_file_lines(tmp_path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a":1}\r\n\n   \n{"b":2}')
    assert list(iter_file_lines(path)) == [b'{"a":1}', b'{"b":2}']


def _rows(wh: Warehouse) -> list[tuple]:
    with wh.engine.connect() as conn:
        result = conn.execute(
            sa.text(
                "SELECT id_treated_data, consumo_real, fazenda, row_ts, row_fp "
                "FROM historico_consumo ORDER BY 1"
            )
        )
        return [tuple(r) for r in result]


def test_reload_skips_rows_stored_as_is(wh: Warehouse, tmp_path) -> None:
    """A reload looks lines up by key and fingerprint and cleans only the others."""
    path = write_jsonl(tmp_path / "r.jsonl", 3_000, seed=8, bad_fraction=0.05)
    first = load_file(wh, path, chunk_rows=300, rule=DEFAULT_RULE, row_ts=NOW)
    stored = _rows(wh)
    assert all(fp is not None for *_, fp in stored) and len(stored) == first.loaded
    later = NOW.replace(day=9)
    again = load_file(wh, path, chunk_rows=300, rule=DEFAULT_RULE, row_ts=later)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, first.loaded)
    assert again.rejected_by_code == first.rejected_by_code
    assert again.landed == again.loaded + again.rejected
    if wh.dialect == "postgresql":
        # The first chunks go the merge way; once one met stored rows, the rest is looked up
        # (when the writer reports that depends on timing: the bench shows the usual share).
        assert 0 < again.matched <= first.loaded
    else:
        assert again.matched == 0  # MySQL always merges
    assert _rows(wh) == stored  # row_ts and fingerprints kept: nothing was written


def test_reload_still_sees_changes_and_duplicates(pg_wh: Warehouse, tmp_path) -> None:
    records = list(generate(2_400, seed=9))
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(lines(records)) + b"\n")
    first = load_file(pg_wh, path, chunk_rows=200, rule=DEFAULT_RULE, row_ts=NOW)
    assert first.inserted == 2_400

    changed = [dict(r) for r in records]
    changed[2_000]["consumo_real"] = records[2_000]["consumo_real"] + 1.5  # a new value
    changed.append(records[1_900])  # a redelivery of a record met earlier in the file
    path.write_bytes(b"\n".join(lines(changed)) + b"\n")
    again = load_file(pg_wh, path, chunk_rows=200, rule=DEFAULT_RULE, row_ts=NOW)
    assert 0 < again.matched < 2_400
    assert (again.inserted, again.updated, again.unchanged) == (0, 1, 2_400)
    assert again.rejected_by_code == {}

    # Moving a client to another farm changes its rows: none of them may be skipped.
    moved = sum(1 for r in records if r["cod_cliente"] == "FazendaUm")
    pg_wh.add_client("FazendaUm", "fazenda_nova", replace=True)
    third = load_file(pg_wh, path, chunk_rows=200, rule=DEFAULT_RULE, row_ts=NOW)
    assert third.updated == moved and third.unchanged == 2_401 - moved  # the redelivery too
    assert {r[2] for r in _rows(pg_wh)} >= {"fazenda_nova", "fazenda_dois"}

    # Another rule makes other rows, even with the same values: nothing may be skipped either.
    other_rule = type(DEFAULT_RULE)("same_values", "DEFAULT_RULE's numbers", DEFAULT_RULE.compute)
    fourth = load_file(pg_wh, path, chunk_rows=200, rule=other_rule, row_ts=NOW)
    # Every row is rewritten; only the redelivered last line may find its row stored as-is,
    # written earlier in this very load.
    assert fourth.updated == 2_400 and fourth.matched <= 1


def test_a_bad_record_delivered_again_is_the_same_rejection(wh: Warehouse) -> None:
    bad = lines([{**day_records(1)[0], "peso_medio": -1}])
    reports = []
    for event in ("e1", "e2", "e3"):
        loader = PartitionLoader(wh, rule=DEFAULT_RULE, row_ts=NOW)
        loader.feed(key(event), bad if event != "e3" else [*bad, *bad])
        reports.append(loader.finish())
    first, again, twice = reports
    assert (first.rejected, first.unchanged) == (1, 0)
    assert (again.rejected, again.unchanged, again.landed) == (0, 1, 1)
    assert (twice.rejected, twice.unchanged) == (0, 2)
    assert count(wh, "SELECT count(*) FROM historico_consumo_rejeitados") == 1
    # Reloading the object that holds the rejection files it again, in place.
    reload = PartitionLoader(wh, rule=DEFAULT_RULE, row_ts=NOW)
    reload.feed(key("e1"), bad)
    assert reload.finish().rejected == 1
    assert count(wh, "SELECT count(*) FROM historico_consumo_rejeitados") == 1
