"""Warehouse on PostgreSQL and MySQL/MariaDB: idempotent upserts, rejections, stats, clients."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from feedlot_pipeline.core.records import DEFAULT_RULE, WAREHOUSE_COLUMNS, clean
from feedlot_pipeline.tools.synthetic import generate
from feedlot_pipeline.warehouse.batches import LedgerEntry
from feedlot_pipeline.warehouse.store import (
    CopyRows,
    LoadCounts,
    Rejection,
    Warehouse,
    WarehouseConfigError,
    normalize_url,
)

CLIENTS = {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois"}
T0 = datetime(2023, 1, 5, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)
KEY = "historico_diario/fazenda_um/2023/01/01/sns-e1.jsonl"
HOSTILE = "x'); DROP TABLE clientes;--"


def rows_of(
    n: int,
    row_ts: datetime = T0,
    seed: int = 7,
    key: str = KEY,
    landed_at: datetime | None = T0,
    corr: str = "corr-1",
) -> list[tuple]:
    return [
        clean(r, CLIENTS, DEFAULT_RULE, key, row_ts, corr, None, landed_at, i)
        for i, r in enumerate(generate(n, seed=seed), 1)
    ]


def fetch(wh: Warehouse, sql: str, **params) -> list[tuple]:
    with wh.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def changed(row: tuple, consumo_real: float, key: str, landed_at: datetime | None) -> tuple:
    """The same record with another consumo_real, landed elsewhere at ``landed_at``."""
    values = dict(zip(WAREHOUSE_COLUMNS, row, strict=True))
    values.update(
        consumo_real=consumo_real,
        raw_object_key=key,
        landed_at=landed_at,
        row_ts=T1,
        correlation_id="corr-2",
        row_fp=5,
        raw_line_no=1,
    )
    return tuple(values[c] for c in WAREHOUSE_COLUMNS)


def totals(counts: dict[str, LoadCounts]) -> LoadCounts:
    out = LoadCounts()
    for c in counts.values():
        out = out + c
    return out


def test_upsert_is_idempotent_and_keeps_row_ts(wh: Warehouse) -> None:
    rows = rows_of(300)
    assert wh.upsert_consumo(rows) == {KEY: LoadCounts(inserted=300)}
    # Reload at a later processing time: nothing changes, row_ts stays the first one.
    assert wh.upsert_consumo(rows_of(300, T1)) == {KEY: LoadCounts(unchanged=300)}
    assert fetch(wh, "SELECT count(*) FROM historico_consumo") == [(300,)]
    stamps = {as_utc(ts) for (ts,) in fetch(wh, "SELECT row_ts FROM historico_consumo")}
    assert stamps == {T0}
    # Lineage alone (another object, time, correlation id and fingerprint) is not a change.
    again = rows_of(300, T1, key="other/key.jsonl", landed_at=T1, corr="corr-9")
    assert wh.upsert_consumo(again) == {"other/key.jsonl": LoadCounts(unchanged=300)}
    assert fetch(wh, "SELECT DISTINCT raw_object_key, correlation_id FROM historico_consumo") == [
        (KEY, "corr-1")
    ]


def test_a_later_landing_replaces_and_the_old_version_is_kept(wh: Warehouse) -> None:
    rows = rows_of(10)
    wh.upsert_consumo(rows)
    newer = changed(rows[3], 77.5, "later/key.jsonl", T1)
    assert wh.upsert_consumo([newer]) == {"later/key.jsonl": LoadCounts(updated=1)}
    ((real, key, ts, corr),) = fetch(
        wh,
        "SELECT consumo_real, raw_object_key, row_ts, correlation_id FROM historico_consumo "
        "WHERE id_treated_data = :id",
        id=rows[3][0],
    )
    assert (real, key, as_utc(ts), corr) == (77.5, "later/key.jsonl", T1, "corr-2")
    ((status, old_real, winner),) = fetch(
        wh,
        "SELECT version_status, consumo_real, winner_object_key FROM historico_consumo_versoes",
    )
    assert (status, old_real, winner) == ("replaced", rows[3][8], "later/key.jsonl")
    # The same correction delivered again changes nothing and archives nothing twice.
    assert wh.upsert_consumo([newer]) == {"later/key.jsonl": LoadCounts(unchanged=1)}
    assert fetch(wh, "SELECT count(*) FROM historico_consumo_versoes") == [(1,)]


def test_an_earlier_landing_is_superseded_not_rejected(wh: Warehouse) -> None:
    rows = rows_of(5, landed_at=T1)
    wh.upsert_consumo(rows)
    older = changed(rows[0], 55.0, "replayed/old.jsonl", T0)  # landed before the stored one
    assert wh.upsert_consumo([older]) == {"replayed/old.jsonl": LoadCounts(superseded=1)}
    ((real,),) = fetch(
        wh, "SELECT consumo_real FROM historico_consumo WHERE id_treated_data = :i", i=rows[0][0]
    )
    assert real == rows[0][8]
    ((status, kept, winner),) = fetch(
        wh,
        "SELECT version_status, consumo_real, winner_object_key FROM historico_consumo_versoes",
    )
    assert (status, kept, winner) == ("superseded", 55.0, KEY)
    assert fetch(wh, "SELECT count(*) FROM historico_consumo_rejeitados") == [(0,)]


def test_rows_before_landing_times_count_as_oldest(wh: Warehouse) -> None:
    rows = rows_of(2, landed_at=None)  # as loaded before migration 0004
    wh.upsert_consumo(rows)
    newer = changed(rows[1], 12.5, "later/key.jsonl", T0)
    assert totals(wh.upsert_consumo([newer])) == LoadCounts(updated=1)


def test_mixed_batch_counts_per_object(wh: Warehouse) -> None:
    rows = rows_of(100)
    wh.upsert_consumo(rows[:60])
    batch = list(rows)
    batch[0] = changed(rows[0], 99.0, KEY, T1)
    assert wh.upsert_consumo(batch, assume_new=True) == {KEY: LoadCounts(40, 1, 59)}
    assert wh.upsert_consumo(batch, assume_new=True) == {KEY: LoadCounts(0, 0, 100)}


def test_one_call_takes_distinct_ids(wh: Warehouse) -> None:
    rows = rows_of(3)
    with pytest.raises(ValueError, match="distinct ids"):
        wh.upsert_consumo([rows[0], rows[1], rows[0]])


def test_ids_stay_text_and_consumo_meta_follows_the_rule(wh: Warehouse) -> None:
    raw = next(generate(1))
    raw.update(id_curral="00012345678901", id_lote="000000000000042", id_raca="0000001")
    wh.upsert_consumo([clean(raw, CLIENTS, DEFAULT_RULE, KEY, T0)])
    ((curral, lote, raca, peso_medio, meta, regra),) = fetch(
        wh,
        "SELECT id_curral, id_lote, id_raca, peso_medio, consumo_meta, regra_consumo_meta "
        "FROM historico_consumo",
    )
    assert (curral, lote, raca) == ("00012345678901", "000000000000042", "0000001")
    assert meta == pytest.approx(peso_medio * 0.0176, abs=1e-6)
    assert regra == DEFAULT_RULE.name


def test_timestamps_are_utc(wh: Warehouse) -> None:
    raw = {**next(generate(1)), "data": "2023-01-01T22:30:00-03:00"}
    wh.upsert_consumo([clean(raw, CLIENTS, DEFAULT_RULE, KEY, T0, None, None, T0, 1)])
    ((data, landed),) = fetch(wh, "SELECT data, landed_at FROM historico_consumo")
    assert as_utc(data) == datetime(2023, 1, 2, 1, 30, tzinfo=timezone.utc)
    assert as_utc(landed) == T0
    counts = wh.partition_row_counts(
        [("fazenda_um", date(2023, 1, 2)), ("fazenda_um", date(2023, 1, 1))]
    )
    assert counts == {("fazenda_um", date(2023, 1, 2)): 1, ("fazenda_um", date(2023, 1, 1)): 0}


def test_copy_rows_need_their_objects_and_postgresql(wh: Warehouse) -> None:
    if wh.dialect == "postgresql":
        payload = wh.encode_rows(rows_of(5))
        assert isinstance(payload, CopyRows) and payload.count == 5
        with pytest.raises(ValueError, match="per_object"):
            wh.upsert_consumo(payload)
        assert wh.upsert_consumo(payload, per_object={KEY: 5}, assume_new=True) == {
            KEY: LoadCounts(inserted=5)
        }
    else:
        with pytest.raises(TypeError):
            wh.encode_rows(rows_of(1))


def rejection(line: int, code: str = "invalid_number", key: str = KEY) -> Rejection:
    return Rejection(
        key,
        line,
        code,
        f"reason {line}",
        '{"bad": true}',
        "FazendaUm",
        "fazenda_um",
        date(2023, 1, 1),
    )


def test_replace_rejections_never_duplicates(wh: Warehouse) -> None:
    day = date(2023, 1, 1)
    wh.replace_rejections("fazenda_um", day, [rejection(1), rejection(2, "invalid_data")])
    wh.replace_rejections("fazenda_um", day, [rejection(1), rejection(2, "invalid_data")])
    wh.replace_rejections("fazenda_dois", day, [rejection(1, key="other.jsonl")])
    assert wh.rejection_counts([KEY, "other.jsonl"]) == {KEY: 2, "other.jsonl": 1}
    wh.replace_rejections("fazenda_um", day, [rejection(2, "invalid_data")])  # line 1 loads now
    assert wh.rejection_counts([KEY]) == {KEY: 1}
    wh.replace_rejections("fazenda_um", day, [])
    assert wh.rejection_counts([KEY]) == {}


def test_object_rejections_are_replaced_per_object(wh: Warehouse) -> None:
    wh.replace_object_rejections([KEY], [rejection(1), rejection(2)])
    wh.replace_object_rejections(["b.jsonl"], [rejection(1, key="b.jsonl")])
    wh.replace_object_rejections([KEY], [rejection(2, "invalid_data")])  # a reload of KEY
    assert wh.rejection_counts([KEY, "b.jsonl"]) == {KEY: 1, "b.jsonl": 1}
    with pytest.raises(ValueError, match="no partition"):
        wh.replace_object_rejections(["x"], [Rejection("x", 1, "c", "r", "{}")])


def test_rejection_text_is_stored_safely(wh: Warehouse) -> None:
    weird = Rejection(
        KEY, 9, "invalid_json", "r\x00ason", "nul\x00 'quote' 🐄 " + "z" * 2_000_000, "c" * 100
    )
    wh.replace_rejections("fazenda_um", date(2023, 1, 1), [weird])
    ((reason, raw, cod),) = fetch(
        wh, "SELECT reason, raw_record, cod_cliente FROM historico_consumo_rejeitados"
    )
    assert "\x00" not in reason and raw.startswith("nul\ufffd 'quote' 🐄 ")
    assert len(raw) < 1_100_000 and cod == "c" * 64


def test_the_ledger_remembers_what_was_loaded(wh: Warehouse) -> None:
    entry = LedgerEntry(KEY, "fazenda_um", date(2023, 1, 1), T0, lines=3, inserted=2, rejected=1)
    wh.record_loads([entry], "run-1")
    assert wh.loaded_objects([KEY, "never.jsonl"]) == {KEY}
    entry.inserted, entry.unchanged = 0, 2
    wh.record_loads([entry], "run-2")  # a reload rewrites the row
    ((inserted, unchanged, run),) = fetch(
        wh, "SELECT inserted, unchanged, run_id FROM historico_consumo_cargas"
    )
    assert (inserted, unchanged, run) == (0, 2, "run-2")


def test_the_checks_find_tampering(wh: Warehouse) -> None:
    from feedlot_pipeline.warehouse.checks import evaluate

    rows = rows_of(50)
    wh.upsert_consumo(rows)
    day, farm = rows[0][10].date(), rows[0][12]
    mine = [r for r in rows if r[12] == farm and r[10].date() == day]
    entry = LedgerEntry(KEY, farm, day, T0, lines=len(mine), inserted=len(mine))
    ids = {(farm, day): {r[0] for r in mine}}
    assert evaluate(wh, {KEY: entry}, ids)[(farm, day)].passed
    with wh.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE historico_consumo SET consumo_meta = consumo_meta + 0.01 "
                "WHERE id_treated_data = :i"
            ),
            {"i": mine[0][0]},
        )
        conn.execute(
            sa.text("DELETE FROM historico_consumo WHERE id_treated_data = :i"),
            {"i": mine[1][0]},
        )
    checks = evaluate(wh, {KEY: entry}, ids)[(farm, day)]
    assert not checks.rows_valid and checks.rows_metadata["consumo_meta_mismatches"] == 1
    assert not checks.reconciles and checks.reconcile_metadata["rows_missing"] == 1


def test_clients_add_is_idempotent_and_guarded(wh: Warehouse) -> None:
    assert wh.add_client("FazendaTres", "fazenda_tres") == "added"
    assert wh.add_client("FazendaTres", "fazenda_tres") == "unchanged"
    with pytest.raises(ValueError, match="already maps to fazenda 'fazenda_tres'"):
        wh.add_client("FazendaTres", "fazenda_quatro")
    assert wh.add_client("FazendaTres", "fazenda_quatro", replace=True) == "replaced"
    assert wh.clients()["FazendaTres"] == "fazenda_quatro"
    # Keys are exact (utf8mb4_bin on MySQL): a different case is a different client.
    assert wh.add_client("fazendatres", "fazenda_tres") == "added"
    for bad in ("Fazenda Tres", "../x", "_unrouted", ""):
        with pytest.raises(ValueError):
            wh.add_client("Outra", bad)
    with pytest.raises(ValueError):
        wh.add_client("  ", "fazenda_x")


def test_hostile_strings_are_data(wh: Warehouse) -> None:
    assert wh.add_client(HOSTILE, "fazenda_x") == "added"
    assert wh.clients()[HOSTILE] == "fazenda_x"
    wh.replace_rejections(
        "fazenda_um",
        date(2023, 1, 1),
        [Rejection(KEY, 1, "unknown_client", HOSTILE, HOSTILE, HOSTILE)],
    )
    assert fetch(wh, "SELECT cod_cliente FROM historico_consumo_rejeitados") == [(HOSTILE,)]
    assert fetch(wh, "SELECT count(*) FROM clientes") == [(3,)]


def test_url_handling() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("mysql://u@h/db").drivername == "mysql+pymysql"
    assert normalize_url("mysql+pymysql://u@h/db").query["charset"] == "utf8mb4"
    for bad in ("postgresql+psycopg2://u@h/db", "sqlite:///x.db", "not a url"):
        with pytest.raises(WarehouseConfigError):
            normalize_url(bad)


def test_from_env_needs_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_URL", raising=False)
    with pytest.raises(WarehouseConfigError, match="FEEDLOT_WAREHOUSE_URL is not set"):
        Warehouse.from_env()


def test_from_env(warehouse_url: str) -> None:
    with Warehouse.from_env() as wh:
        assert wh.dialect == "postgresql" and "FazendaUm" in wh.clients()
        assert "***" in repr(wh) or "@" in repr(wh)


def test_columns_in_order() -> None:
    assert WAREHOUSE_COLUMNS[0] == "id_treated_data"
    assert WAREHOUSE_COLUMNS[-5:] == (
        "row_ts",
        "correlation_id",
        "row_fp",
        "landed_at",
        "raw_line_no",
    )


def test_from_env_reads_the_url_from_a_secret(aws, warehouse_url, monkeypatch) -> None:
    """Where FEEDLOT_WAREHOUSE_URL is not set (the EC2 worker), the URL comes from the secret."""
    from feedlot_pipeline.core.aws import client
    from feedlot_pipeline.warehouse.store import WarehouseConfigError

    sm = client("secretsmanager")
    tag = uuid.uuid4().hex[:8]
    as_json = sm.create_secret(Name=f"t{tag}/json", SecretString=f'{{"url": "{warehouse_url}"}}')
    as_text = sm.create_secret(Name=f"t{tag}/text", SecretString=warehouse_url)
    no_key = sm.create_secret(Name=f"t{tag}/nokey", SecretString='{"host": "db"}')
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_URL")
    for secret in (as_json["ARN"], f"t{tag}/text", as_text["ARN"]):
        monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", secret)
        with Warehouse.from_env() as wh:
            assert "FazendaUm" in wh.clients()
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", no_key["ARN"])
    with pytest.raises(WarehouseConfigError, match="without a string under 'url'"):
        Warehouse.from_env()
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", f"t{tag}/missing")
    with pytest.raises(WarehouseConfigError, match="cannot read the warehouse secret"):
        Warehouse.from_env()
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_SECRET")
    with pytest.raises(WarehouseConfigError, match="FEEDLOT_WAREHOUSE_URL is not set"):
        Warehouse.from_env()
