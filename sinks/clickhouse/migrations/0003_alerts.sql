-- Invoices received per local hour and unit: the pipeline-silence rule looks for silent hours.
CREATE TABLE IF NOT EXISTS receipts_hourly
(
    received_hour     DateTime('Asia/Ho_Chi_Minh'),
    admin_unit_code   LowCardinality(String),
    invoices          SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (received_hour, admin_unit_code)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS receipts_hourly_mv TO receipts_hourly AS
SELECT toStartOfHour(toTimeZone(received_at, 'Asia/Ho_Chi_Minh')) AS received_hour, admin_unit_code,
       count() AS invoices
FROM invoices GROUP BY received_hour, admin_unit_code;

INSERT INTO receipts_hourly
SELECT toStartOfHour(toTimeZone(received_at, 'Asia/Ho_Chi_Minh')) AS received_hour, admin_unit_code, count()
FROM invoices GROUP BY received_hour, admin_unit_code;

-- Alert instances, one row per change; the newest version of a fingerprint is its state. The
-- evaluator writes a day's instances and its progress row ('__progress__') in one insert, so a
-- crash never leaves a day half applied.
CREATE TABLE IF NOT EXISTS alert_instances
(
    fingerprint       String,
    rule              LowCardinality(String),
    labels            Map(String, String),
    severity          LowCardinality(String),
    state             LowCardinality(String),
    held_days         UInt16,
    clear_days        UInt16,
    started_day       Nullable(Date),
    fired_day         Nullable(Date),
    resolved_day      Nullable(Date),
    last_notified_at  Nullable(Float64),
    values            String COMMENT 'JSON',
    evaluated_day     Date,
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY fingerprint;

-- Every event the evaluator produced, sent or suppressed (silence, inhibition), by id.
CREATE TABLE IF NOT EXISTS alert_events
(
    event_id          String,
    type              LowCardinality(String),
    fingerprint       String,
    rule              LowCardinality(String),
    labels            Map(String, String),
    severity          LowCardinality(String),
    day               Date,
    started_day       Nullable(Date),
    values            String COMMENT 'JSON',
    emitted_at        DateTime64(3, 'UTC'),
    suppressed_by     String
)
ENGINE = ReplacingMergeTree
ORDER BY event_id;
