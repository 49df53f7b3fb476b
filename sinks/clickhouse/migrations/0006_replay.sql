-- Replay actions (rewind, archive, verify, publish, rebuild, compare, switch, drop): who, when, what,
-- with what result. Copied from the audit file under the data directory (the log of record), so one
-- entry may arrive twice: the id collapses repeats. No URL credentials or secrets are ever written.
CREATE TABLE IF NOT EXISTS replay_audit
(
    id                String,
    at                DateTime64(3, 'UTC'),
    user              String,
    host              String,
    action            LowCardinality(String),
    target            String COMMENT 'JSON: group, topics, partitions, range, archive, database',
    result            LowCardinality(String) COMMENT 'ok, dry_run, refused, interrupted, failed, differences',
    detail            String COMMENT 'JSON: counts, offsets, rates, error',
    duration_s        Float64
)
ENGINE = ReplacingMergeTree
ORDER BY id;
