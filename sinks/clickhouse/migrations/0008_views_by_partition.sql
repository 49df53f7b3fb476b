-- The aggregates keyed by source partition too. A restore can then tell, from the store alone and
-- whatever the deduplication window, what a partition's newest block is missing in each view:
-- only the partition's own writer adds to its keys, so `invoices` and the view must agree on them
-- (sinks/clickhouse/reconcile.py). Each view is rebuilt here from `invoices`, the table of record,
-- which also mends any view a crash left short before this version. Run it with the workers
-- stopped (`einvoice-monitor` applies migrations when it starts): an insert that lands between
-- the rebuild and the new view is not counted in it.
DROP VIEW IF EXISTS seller_daily_mv;
CREATE TABLE IF NOT EXISTS seller_daily_0008
(
    issue_date        Date,
    vsic_code         LowCardinality(String),
    admin_unit_code   LowCardinality(String),
    seller_id         String,
    registered        UInt8,
    kafka_partition   UInt16,
    invoices          SimpleAggregateFunction(sum, UInt64),
    amount_vnd        SimpleAggregateFunction(sum, Int64),
    vat_amount_vnd    SimpleAggregateFunction(sum, Int64),
    non_cash_invoices SimpleAggregateFunction(sum, UInt64),
    first_issued_at   SimpleAggregateFunction(min, DateTime64(3, 'Asia/Ho_Chi_Minh')),
    last_issued_at    SimpleAggregateFunction(max, DateTime64(3, 'Asia/Ho_Chi_Minh'))
)
ENGINE = AggregatingMergeTree
ORDER BY (issue_date, vsic_code, admin_unit_code, seller_id, registered, kafka_partition)
SETTINGS non_replicated_deduplication_window = 10000;
TRUNCATE TABLE seller_daily_0008;
INSERT INTO seller_daily_0008
SELECT issue_date, vsic_code, admin_unit_code, seller_id, registered, kafka_partition,
       count() AS invoices, sum(amount_vnd) AS amount_vnd, sum(vat_amount_vnd) AS vat_amount_vnd,
       sum(non_cash) AS non_cash_invoices, min(issued_at) AS first_issued_at, max(issued_at) AS last_issued_at
FROM invoices GROUP BY issue_date, vsic_code, admin_unit_code, seller_id, registered, kafka_partition;
DROP TABLE IF EXISTS seller_daily;
RENAME TABLE seller_daily_0008 TO seller_daily;
CREATE MATERIALIZED VIEW IF NOT EXISTS seller_daily_mv TO seller_daily AS
SELECT issue_date, vsic_code, admin_unit_code, seller_id, registered, kafka_partition,
       count() AS invoices, sum(amount_vnd) AS amount_vnd, sum(vat_amount_vnd) AS vat_amount_vnd,
       sum(non_cash) AS non_cash_invoices, min(issued_at) AS first_issued_at, max(issued_at) AS last_issued_at
FROM invoices GROUP BY issue_date, vsic_code, admin_unit_code, seller_id, registered, kafka_partition;

DROP VIEW IF EXISTS segment_daily_mv;
CREATE TABLE IF NOT EXISTS segment_daily_0008
(
    issue_date        Date,
    vsic_code         LowCardinality(String),
    admin_unit_code   LowCardinality(String),
    registered        UInt8,
    kafka_partition   UInt16,
    invoices          SimpleAggregateFunction(sum, UInt64),
    amount_vnd        SimpleAggregateFunction(sum, Int64),
    vat_amount_vnd    SimpleAggregateFunction(sum, Int64),
    non_cash_invoices SimpleAggregateFunction(sum, UInt64),
    issuers           AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (issue_date, vsic_code, admin_unit_code, registered, kafka_partition)
SETTINGS non_replicated_deduplication_window = 10000;
TRUNCATE TABLE segment_daily_0008;
INSERT INTO segment_daily_0008
SELECT issue_date, vsic_code, admin_unit_code, registered, kafka_partition,
       count() AS invoices, sum(amount_vnd) AS amount_vnd, sum(vat_amount_vnd) AS vat_amount_vnd,
       sum(non_cash) AS non_cash_invoices, uniqExactState(seller_id) AS issuers
FROM invoices GROUP BY issue_date, vsic_code, admin_unit_code, registered, kafka_partition;
DROP TABLE IF EXISTS segment_daily;
RENAME TABLE segment_daily_0008 TO segment_daily;
CREATE MATERIALIZED VIEW IF NOT EXISTS segment_daily_mv TO segment_daily AS
SELECT issue_date, vsic_code, admin_unit_code, registered, kafka_partition,
       count() AS invoices, sum(amount_vnd) AS amount_vnd, sum(vat_amount_vnd) AS vat_amount_vnd,
       sum(non_cash) AS non_cash_invoices, uniqExactState(seller_id) AS issuers
FROM invoices GROUP BY issue_date, vsic_code, admin_unit_code, registered, kafka_partition;

DROP VIEW IF EXISTS receipts_hourly_mv;
CREATE TABLE IF NOT EXISTS receipts_hourly_0008
(
    received_hour     DateTime('Asia/Ho_Chi_Minh'),
    admin_unit_code   LowCardinality(String),
    kafka_partition   UInt16,
    invoices          SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (received_hour, admin_unit_code, kafka_partition)
SETTINGS non_replicated_deduplication_window = 10000;
TRUNCATE TABLE receipts_hourly_0008;
INSERT INTO receipts_hourly_0008
SELECT toStartOfHour(toTimeZone(received_at, 'Asia/Ho_Chi_Minh')) AS received_hour, admin_unit_code, kafka_partition,
       count() AS invoices
FROM invoices GROUP BY received_hour, admin_unit_code, kafka_partition;
DROP TABLE IF EXISTS receipts_hourly;
RENAME TABLE receipts_hourly_0008 TO receipts_hourly;
CREATE MATERIALIZED VIEW IF NOT EXISTS receipts_hourly_mv TO receipts_hourly AS
SELECT toStartOfHour(toTimeZone(received_at, 'Asia/Ho_Chi_Minh')) AS received_hour, admin_unit_code, kafka_partition,
       count() AS invoices
FROM invoices GROUP BY received_hour, admin_unit_code, kafka_partition;

-- The restore reads a block back by its token, and the rows of its received hours: skip indexes
-- keep both reads to the granules of the block's days (rows are sorted by issue day, which a
-- block's rows share with ~50 other blocks a day and their receipt follows closely).
ALTER TABLE invoices ADD INDEX IF NOT EXISTS received_at_minmax received_at TYPE minmax GRANULARITY 1;
ALTER TABLE invoices MATERIALIZE INDEX received_at_minmax;
ALTER TABLE invoices ADD INDEX IF NOT EXISTS insert_token_bloom insert_token TYPE bloom_filter GRANULARITY 1;
ALTER TABLE invoices MATERIALIZE INDEX insert_token_bloom;
