-- The curated lake for Athena, as DDL (deploy/cloudformation/analytics.yaml creates the same
-- database and tables; use this file where CloudFormation is not used, or to inspect them).
-- Replace feedlot-processed with FEEDLOT_PROCESSED_BUCKET. The platform registers every
-- farm x day partition itself when it writes the Parquet file (Glue BatchCreatePartition), so
-- no crawler and no MSCK REPAIR TABLE are needed; the last statement is only for a lake written
-- by hand.

CREATE DATABASE IF NOT EXISTS feedlot
  COMMENT 'feedlot_pipeline curated lake (Parquet in the processed bucket)';

CREATE EXTERNAL TABLE IF NOT EXISTS feedlot.historico_consumo (
  id_treated_data     string    COMMENT 'UUIDv5 of (cod_cliente, id_lote, id_curral, data)',
  id_curral           string    COMMENT 'pen (digit string)',
  id_raca             string    COMMENT 'breed (digit string)',
  id_lote             string    COMMENT 'lot (digit string)',
  peso_entrada        double    COMMENT 'entry weight, kg',
  peso_medio          double    COMMENT 'average weight, kg',
  quantidade_animais  int       COMMENT 'animals in the lot',
  dia_confinamento    int       COMMENT 'days in confinement',
  consumo_real        double    COMMENT 'actual intake, kg per head per day',
  consumo_meta        double    COMMENT 'target intake, kg per head per day',
  data                timestamp COMMENT 'date of the record (UTC)',
  cod_cliente         string    COMMENT 'client code',
  regra_consumo_meta  string    COMMENT 'rule that computed consumo_meta',
  raw_object_key      string    COMMENT 'raw-zone object the row was loaded from',
  row_ts              timestamp COMMENT 'first processing time (UTC)',
  correlation_id      string    COMMENT 'trace id of the ingest',
  row_fp              bigint    COMMENT 'fingerprint of the raw line'
)
PARTITIONED BY (fazenda string, dia date)
STORED AS PARQUET
LOCATION 's3://feedlot-processed/curated/historico_consumo/'
TBLPROPERTIES ('classification' = 'parquet');

CREATE EXTERNAL TABLE IF NOT EXISTS feedlot.consumo_diario (
  id_lote               string    COMMENT 'lot (digit string)',
  id_curral             string    COMMENT 'pen (digit string)',
  registros             int       COMMENT 'records of the lot x pen that day',
  quantidade_animais    int       COMMENT 'animals fed',
  consumo_real_cabeca   double    COMMENT 'actual intake, kg per head',
  consumo_meta_cabeca   double    COMMENT 'target intake, kg per head',
  desvio_pct            double    COMMENT '(real - meta) / meta x 100',
  consumo_total_kg      double    COMMENT 'kg fed: consumo_real x quantidade_animais',
  peso_medio            double    COMMENT 'average weight, kg (weighted by animals)',
  dia_confinamento      int       COMMENT 'days in confinement',
  regra_consumo_meta    string    COMMENT 'rule that computed consumo_meta',
  ultimo_processamento  timestamp COMMENT 'newest row_ts of the lot x pen that day (UTC)'
)
PARTITIONED BY (fazenda string, dia date)
STORED AS PARQUET
LOCATION 's3://feedlot-processed/curated/consumo_diario/'
TBLPROPERTIES ('classification' = 'parquet');

-- Sample query (the named query feedlot-daily-summary-per-farm): per farm and day, kg fed,
-- consumo real vs meta per head and the lots more than 25 % off target, last 30 days.
SELECT fazenda, dia, count(*) AS lotes, sum(quantidade_animais) AS animais,
       round(sum(consumo_total_kg), 1) AS kg_fornecidos,
       round(sum(consumo_total_kg) / sum(quantidade_animais), 3) AS real_kg_cabeca,
       round(sum(consumo_meta_cabeca * quantidade_animais) / sum(quantidade_animais), 3)
         AS meta_kg_cabeca,
       count_if(abs(desvio_pct) > 25) AS lotes_fora_da_meta
FROM feedlot.consumo_diario
WHERE dia >= current_date - INTERVAL '30' DAY
GROUP BY fazenda, dia
ORDER BY fazenda, dia;

-- Only for files written outside the platform (it registers its partitions itself):
-- MSCK REPAIR TABLE feedlot.historico_consumo;
