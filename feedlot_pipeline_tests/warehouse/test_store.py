"""Warehouse on PostgreSQL and MySQL/MariaDB: idempotent upserts, rejections, stats, clients."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from feedlot_pipeline.core.records import DEFAULT_RULE, WAREHOUSE_COLUMNS, clean
from feedlot_pipeline.tools.synthetic import generate
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


def rows_of(n: int, row_ts: datetime = T0, seed: int = 7) -> list[tuple]:
    return [clean(r, CLIENTS, DEFAULT_RULE, KEY, row_ts, "corr-1") for r in generate(n, seed=seed)]


def fetch(wh: Warehouse, sql: str, **params) -> list[tuple]:
    with wh.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def test_upsert_is_idempotent_and_keeps_row_ts(wh: Warehouse) -> None:
    rows = rows_of(300)
    assert wh.upsert_consumo(rows) == LoadCounts(inserted=300)
    # Reload at a later processing time: nothing changes, row_ts stays the first one.
    assert wh.upsert_consumo(rows_of(300, T1)) == LoadCounts(unchanged=300)
    assert fetch(wh, "SELECT count(*) FROM historico_consumo") == [(300,)]
    stamps = {as_utc(ts) for (ts,) in fetch(wh, "SELECT row_ts FROM historico_consumo")}
    assert stamps == {T0}

    # One record changes: exactly one update, with the new processing time and lineage.
    changed = list(rows_of(300, T1))
    target = changed[17]
    changed[17] = (*target[:8], target[8] + 1.0, *target[9:14], "other/key.jsonl", T1, "corr-2", 5)
    # Lineage alone (another object, correlation id and fingerprint) is not a change.
    changed[18] = (*changed[18][:14], "other/key.jsonl", T1, "corr-2", 6)
    assert wh.upsert_consumo(changed) == LoadCounts(updated=1, unchanged=299)
    (row,) = fetch(
        wh,
        "SELECT consumo_real, raw_object_key, row_ts, correlation_id, row_fp "
        "FROM historico_consumo WHERE id_treated_data = :id",
        id=target[0],
    )
    assert row[0] == target[8] + 1.0 and row[1] == "other/key.jsonl" and as_utc(row[2]) == T1
    assert row[3:] == ("corr-2", 5)
    (kept,) = fetch(
        wh,
        "SELECT raw_object_key, correlation_id, row_fp FROM historico_consumo "
        "WHERE id_treated_data = :id",
        id=changed[18][0],
    )
    assert kept == (rows[18][14], rows[18][16], None)
    others = fetch(wh, "SELECT count(*) FROM historico_consumo WHERE row_ts = :t", t=wh._ts(T0))
    assert others == [(299,)]


def test_mixed_batch_counts_inserts_updates_and_unchanged(wh: Warehouse) -> None:
    rows = rows_of(100)
    wh.upsert_consumo(rows[:60])
    batch = list(rows)
    batch[0] = (*batch[0][:4], batch[0][4] + 5, *batch[0][5:])  # peso_entrada changed
    assert wh.upsert_consumo(batch, assume_new=True) == LoadCounts(40, 1, 59)
    assert wh.upsert_consumo(batch, assume_new=True) == LoadCounts(0, 0, 100)


def test_duplicate_ids_in_one_call_keep_the_last(wh: Warehouse) -> None:
    rows = rows_of(3)
    later = (*rows[0][:8], 99.5, *rows[0][9:])
    assert wh.upsert_consumo([rows[0], rows[1], later, rows[2]]) == LoadCounts(inserted=3)
    value = fetch(
        wh, "SELECT consumo_real FROM historico_consumo WHERE id_treated_data = :i", i=rows[0][0]
    )
    assert value == [(99.5,)]


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
    wh.upsert_consumo([clean(raw, CLIENTS, DEFAULT_RULE, KEY, T0)])
    ((data,),) = fetch(wh, "SELECT data FROM historico_consumo")
    assert as_utc(data) == datetime(2023, 1, 2, 1, 30, tzinfo=timezone.utc)
    assert wh.partition_stats("fazenda_um", date(2023, 1, 2))["rows"] == 1
    assert wh.partition_stats("fazenda_um", date(2023, 1, 1))["rows"] == 0


def test_copy_rows_need_unique_and_postgresql(wh: Warehouse) -> None:
    if wh.dialect == "postgresql":
        payload = wh.encode_rows(rows_of(5))
        assert isinstance(payload, CopyRows) and payload.count == 5
        with pytest.raises(ValueError, match="unique"):
            wh.upsert_consumo(payload)
        assert wh.upsert_consumo(payload, unique=True) == LoadCounts(inserted=5)
    else:
        with pytest.raises(TypeError):
            wh.encode_rows(rows_of(1))


def rejection(line: int, code: str = "invalid_number", key: str = KEY) -> Rejection:
    return Rejection(key, line, code, f"reason {line}", '{"bad": true}', "FazendaUm")


def test_replace_rejections_never_duplicates(wh: Warehouse) -> None:
    day = date(2023, 1, 1)
    wh.replace_rejections("fazenda_um", day, [rejection(1), rejection(2, "duplicate")])
    wh.replace_rejections("fazenda_um", day, [rejection(1), rejection(2, "duplicate")])
    wh.replace_rejections("fazenda_dois", day, [rejection(1, key="other.jsonl")])
    stats = wh.partition_stats("fazenda_um", day)
    assert stats["rejected"] == 2
    assert stats["rejected_by_code"] == {"invalid_number": 1, "duplicate": 1}
    wh.replace_rejections("fazenda_um", day, [rejection(2, "duplicate")])  # line 1 now loads
    assert wh.partition_stats("fazenda_um", day)["rejected_by_code"] == {"duplicate": 1}
    assert wh.partition_stats("fazenda_dois", day)["rejected"] == 1
    wh.replace_rejections("fazenda_um", day, [])
    assert wh.partition_stats("fazenda_um", day)["rejected"] == 0


def test_upsert_rejections_takes_the_partition_from_the_key(wh: Warehouse) -> None:
    wh.upsert_rejections([rejection(1), rejection(1, "invalid_data")])
    assert wh.partition_stats("fazenda_um", date(2023, 1, 1))["rejected_by_code"] == {
        "invalid_data": 1
    }
    with pytest.raises(ValueError, match="no partition"):
        wh.upsert_rejections([rejection(1, key="somewhere/else.jsonl")])
    other = rejection(3, key="bulk/file.jsonl")
    other.fazenda, other.dia = "_unrouted", date(2024, 5, 6)
    wh.upsert_rejections([other])
    assert wh.partition_stats("_unrouted", date(2024, 5, 6))["rejected"] == 1


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


def test_partition_stats_find_tampering(wh: Warehouse) -> None:
    rows = rows_of(200)
    wh.upsert_consumo(rows)
    day = rows[0][10].date()
    farm = rows[0][12]
    expected = sum(1 for r in rows if r[12] == farm and r[10].date() == day)
    stats = wh.partition_stats(farm, day)
    assert stats["rows"] == stats["distinct_ids"] == expected > 0
    assert stats["consumo_meta_mismatches"] == 0 and not any(stats["nulls"].values())
    with wh.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE historico_consumo SET consumo_meta = consumo_meta + 0.01 "
                "WHERE id_treated_data = :i"
            ),
            {"i": rows[0][0]},
        )
        conn.execute(
            sa.text(
                "UPDATE historico_consumo SET regra_consumo_meta = 'no_such_rule' "
                "WHERE id_treated_data = :i"
            ),
            {"i": next(r[0] for r in rows[1:] if r[12] == farm and r[10].date() == day)},
        )
    stats = wh.partition_stats(farm, day)
    assert stats["consumo_meta_mismatches"] == 2 and stats["unknown_rules"] == ["no_such_rule"]


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
    assert WAREHOUSE_COLUMNS[-3:] == ("row_ts", "correlation_id", "row_fp")


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
