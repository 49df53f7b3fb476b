-- Every webhook delivery attempt, for the delivery board and to resume a retry schedule after a
-- restart (first attempt time and attempt count per endpoint and event). No URL and no secret here:
-- URLs may carry tokens.
CREATE TABLE IF NOT EXISTS webhook_attempts
(
    attempted_at      DateTime64(3, 'UTC'),
    endpoint          LowCardinality(String),
    event_id          String,
    event_type        LowCardinality(String),
    rule              LowCardinality(String),
    attempt           UInt16 COMMENT '1-based, counted across restarts and redeliveries',
    outcome           LowCardinality(String) COMMENT 'delivered, retry, rejected, gone, exhausted, unsafe_url',
    status            UInt16 COMMENT 'HTTP status; 0 = no response (connection error, timeout)',
    latency_ms        Float64,
    error             String,
    source            LowCardinality(String) COMMENT 'stream or redeliver',
    worker            String
)
ENGINE = MergeTree
ORDER BY (endpoint, event_id, attempted_at)
TTL toDateTime(attempted_at) + INTERVAL 400 DAY;

-- Endpoints disabled by a 410 Gone (or enabled again), newest row wins. Keyed by name; the URL is
-- identified by a digest, so changing an endpoint's URL enables it again.
CREATE TABLE IF NOT EXISTS webhook_endpoint_state
(
    endpoint          String,
    url_digest        String,
    disabled          UInt8,
    reason            String,
    changed_at        DateTime64(3, 'UTC'),
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY endpoint;
