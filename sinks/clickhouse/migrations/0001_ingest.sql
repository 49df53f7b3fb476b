-- Enriched invoices: one row per distinct valid invoice, with its Kafka coordinates.
-- non_replicated_deduplication_window makes insert_deduplication_token work on plain MergeTree.
-- No PARTITION BY here nor in the views' targets: one insert is then exactly one part per table,
-- which is what lets the sink repair an insert cut short by a crash (see invoice_sink.py).
CREATE TABLE IF NOT EXISTS invoices
(
    seller_id         String,
    invoice_code      String,
    invoice_key       Int64 COMMENT '64-bit hash of (seller_id, invoice_code): the stream dedup key',
    invoice_form      UInt8,
    invoice_symbol    LowCardinality(String),
    issued_at         DateTime64(3, 'Asia/Ho_Chi_Minh'),
    issue_date        Date COMMENT 'local day in Asia/Ho_Chi_Minh',
    amount_vnd        Int64,
    vat_rate          UInt8,
    vat_amount_vnd    Int64,
    payment_method    LowCardinality(String),
    non_cash          UInt8,
    register_id       String,
    buyer_tax_code    Nullable(String),
    seller_kind       LowCardinality(String),
    registered        UInt8 COMMENT '0 when the seller was not in the registry at ingest',
    vsic_code         LowCardinality(String),
    admin_unit_code   LowCardinality(String),
    schema_id         UInt16,
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt16,
    kafka_offset      UInt64,
    insert_token      LowCardinality(String) COMMENT 'insert_deduplication_token of the insert that wrote the row',
    received_at       DateTime64(3, 'UTC') COMMENT 'Kafka record timestamp',
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (issue_date, vsic_code, admin_unit_code, seller_id, invoice_key)
SETTINGS non_replicated_deduplication_window = 10000;

-- Per seller and local day: the base of adoption (who issued when) and of dormant-issuer checks.
CREATE TABLE IF NOT EXISTS seller_daily
(
    issue_date        Date,
    vsic_code         LowCardinality(String),
    admin_unit_code   LowCardinality(String),
    seller_id         String,
    registered        UInt8,
    invoices          SimpleAggregateFunction(sum, UInt64),
    amount_vnd        SimpleAggregateFunction(sum, Int64),
    vat_amount_vnd    SimpleAggregateFunction(sum, Int64),
    non_cash_invoices SimpleAggregateFunction(sum, UInt64),
    first_issued_at   SimpleAggregateFunction(min, DateTime64(3, 'Asia/Ho_Chi_Minh')),
    last_issued_at    SimpleAggregateFunction(max, DateTime64(3, 'Asia/Ho_Chi_Minh'))
)
ENGINE = AggregatingMergeTree
ORDER BY (issue_date, vsic_code, admin_unit_code, seller_id, registered)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS seller_daily_mv TO seller_daily AS
SELECT issue_date, vsic_code, admin_unit_code, seller_id, registered,
       count() AS invoices, sum(amount_vnd) AS amount_vnd, sum(vat_amount_vnd) AS vat_amount_vnd,
       sum(non_cash) AS non_cash_invoices, min(issued_at) AS first_issued_at, max(issued_at) AS last_issued_at
FROM invoices GROUP BY issue_date, vsic_code, admin_unit_code, seller_id, registered;

-- Per segment (sector x unit) and local day.
CREATE TABLE IF NOT EXISTS segment_daily
(
    issue_date        Date,
    vsic_code         LowCardinality(String),
    admin_unit_code   LowCardinality(String),
    registered        UInt8,
    invoices          SimpleAggregateFunction(sum, UInt64),
    amount_vnd        SimpleAggregateFunction(sum, Int64),
    vat_amount_vnd    SimpleAggregateFunction(sum, Int64),
    non_cash_invoices SimpleAggregateFunction(sum, UInt64),
    issuers           AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (issue_date, vsic_code, admin_unit_code, registered)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS segment_daily_mv TO segment_daily AS
SELECT issue_date, vsic_code, admin_unit_code, registered,
       count() AS invoices, sum(amount_vnd) AS amount_vnd, sum(vat_amount_vnd) AS vat_amount_vnd,
       sum(non_cash) AS non_cash_invoices, uniqExactState(seller_id) AS issuers
FROM invoices GROUP BY issue_date, vsic_code, admin_unit_code, registered;

-- Every version of every registration seen on business.registry; the newest Kafka offset wins.
CREATE TABLE IF NOT EXISTS registry_history
(
    seller_id         String,
    valid_from        Date,
    name              String,
    vsic_code         LowCardinality(String),
    admin_unit_code   LowCardinality(String),
    obliged           UInt8,
    status            LowCardinality(String),
    kafka_partition   UInt16,
    kafka_offset      UInt64,
    received_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY (seller_id, valid_from);

-- Reference table of administrative units: the aggregation level is data, not code.
CREATE TABLE IF NOT EXISTS admin_units
(
    code              String,
    name              String,
    level             LowCardinality(String) COMMENT 'province, district or commune',
    parent_code       String,
    valid_from        Date DEFAULT toDate('1970-01-01')
)
ENGINE = ReplacingMergeTree
ORDER BY code;

-- VSIC 2018 sector names.
CREATE TABLE IF NOT EXISTS sectors
(
    vsic_code         String,
    name              String,
    name_en           String
)
ENGINE = ReplacingMergeTree
ORDER BY vsic_code;

-- The worker's own figures, written periodically, for the pipeline-health board.
CREATE TABLE IF NOT EXISTS pipeline_metrics
(
    ts                DateTime64(3, 'UTC'),
    worker            LowCardinality(String),
    metric            LowCardinality(String),
    label             String,
    value             Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (metric, ts)
TTL toDateTime(ts) + INTERVAL 90 DAY;
