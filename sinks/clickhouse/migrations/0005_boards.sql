-- What the evaluator saw, per complete day, for the boards and the offline report: the adoption of
-- every segment and roll-up ('*') at the evaluation level, with the same-weekday baselines the rules
-- compared against. Computed once per day by the evaluator (the as-of-day registry join is too heavy
-- to run on every board refresh); a re-evaluation replaces the day's rows.
CREATE TABLE IF NOT EXISTS segment_adoption
(
    day               Date,
    level             LowCardinality(String) COMMENT 'unit level: province, district or commune',
    sector            LowCardinality(String) COMMENT 'VSIC code; * = all sectors',
    unit              LowCardinality(String) COMMENT 'admin unit code; * = the province',
    eligible          UInt32,
    active_1d         UInt32,
    active_7d         UInt32,
    active_28d        UInt32,
    adoption_7d       Float64,
    adoption_28d      Float64,
    issuing_share     Float64 COMMENT 'active_1d / eligible: the daily signal of adoption_drop',
    baseline_share    Nullable(Float64) COMMENT 'same weekday, previous weeks; NULL without enough history',
    invoices          UInt64,
    baseline_invoices Nullable(Float64),
    revenue_vnd       Int64,
    vat_vnd           Int64,
    issuers           UInt32,
    non_cash_share    Float64,
    holiday           UInt8,
    evaluated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (day, level, sector, unit);

-- Regular issuers gone silent, as the dormant-issuer rule named them on each evaluated day.
CREATE TABLE IF NOT EXISTS dormant_issuers
(
    day                  Date,
    unit                 LowCardinality(String),
    seller_id            String,
    sector               LowCardinality(String),
    last_invoice_day     Date,
    silent_days          UInt16,
    usual_daily_invoices Float64,
    evaluated_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (day, unit, seller_id);

-- The live silences (they live in a compacted Kafka topic) mirrored for the alerts board; newest
-- version wins, deleted = 1 once the silence is gone from the topic.
CREATE TABLE IF NOT EXISTS alert_silences
(
    silence_id        String,
    matchers          Map(String, String),
    starts_at         DateTime64(3, 'UTC'),
    ends_at           DateTime64(3, 'UTC'),
    comment           String,
    created_by        String,
    deleted           UInt8,
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY silence_id;
