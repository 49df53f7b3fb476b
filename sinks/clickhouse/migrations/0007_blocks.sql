-- The block chain of each source partition: one row per insert of invoices that landed (the view
-- runs only for blocks ClickHouse did not drop as duplicates). It is the store's fence against a
-- frozen worker (docs/architecture.md, Exactly once): every writer starts its next block right after the end of
-- the last block that landed, under a deduplication token naming only that start, so two writers
-- of one partition (a worker frozen past its session and the one that took over) write the same
-- starts, the first insert of a start wins, and the other learns it from here and resyncs.
-- block_start and block_end are record offsets (rejected records included), from the insert
-- token `topic/partition/start..end`; tokens of older inserts (`topic/partition/first-last`) name
-- row offsets and give min and max row offset instead. Kept 30 days: a chain older than that
-- is read from the invoices table itself (its highest offset).
CREATE TABLE IF NOT EXISTS invoice_blocks
(
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt16,
    block_start       UInt64,
    block_end         UInt64,
    insert_token      String,
    rows              UInt64,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (kafka_topic, kafka_partition, block_start)
TTL toDateTime(inserted_at) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS invoice_blocks_mv TO invoice_blocks AS
SELECT
    kafka_topic,
    kafka_partition,
    if(position(insert_token, '..') > 0,
       toUInt64(splitByChar('/', splitByString('..', insert_token)[1])[-1]), min(kafka_offset)) AS block_start,
    if(position(insert_token, '..') > 0, toUInt64(splitByString('..', insert_token)[2]), max(kafka_offset)) AS block_end,
    insert_token,
    count() AS rows
FROM invoices
GROUP BY kafka_topic, kafka_partition, insert_token;
