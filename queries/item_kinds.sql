-- item_kinds: what each item of each application is, inferred from the data.
--
-- Answers: "is this item a menu/input the caller answers, a transfer to an agent, or a goodbye
-- that ends the call?" VoiceTrends does not say; the counters do (shared/spec/voicetrends-api.md,
-- "What the counters appear to mean"). Every analysis view (calls, hotspots, ...) reads its
-- kinds from here, so one rule decides everywhere.
--
-- The rule, on an item's counters summed over every stored row of every phone (ALL included)
-- and every window, whatever --from/--to says: the kind is a property of the item, and a
-- narrow date range with few calls must not turn a transfer that happened not to connect that
-- day into a goodbye.
--   transfer  it ever transferred a call (transfer > 0), or every visit ended the call with
--             nothing filled (disconnect = visits > 0, filled = 0): a transfer point that has
--             never connected. In the seed's example: disconnect = visits, filled = transfer.
--   terminal  it never transferred, every visit ended the call (disconnect = visits > 0) and
--             some were filled: a goodbye / confirmation item (the example's thank_you).
--   ordinary  everything else: menus and inputs, where a visit ends filled, nomatch, noinput
--             or in a hang-up (visits = filled + nomatch + noinput + disconnect).
-- A rule read off one example: data_quality lists the rows that break what it implies.
--
-- Columns:
--   application   VARCHAR  application URL
--   page          VARCHAR  VoiceXML page
--   form          VARCHAR  form id
--   item          VARCHAR  form item name
--   kind          VARCHAR  'transfer' | 'terminal' | 'ordinary'
--   visits        BIGINT   the evidence: counters summed over every stored row of the item
--   filled        BIGINT
--   transfer      BIGINT
--   disconnect    BIGINT
--
-- How: reads flow_files_unfiltered (every data row the store holds, before any date filter,
-- including rows of superseded fetches: they are real observations of the same item).
-- The result is gathered into one list and unnested again. That changes no row, but it tells
-- DuckDB's planner the truth: over Parquet it estimates a GROUP BY at its input's size (Parquet
-- carries no distinct counts), so it took these few dozen rows for millions and built its hash
-- joins on the data side of every view that joins them (2x slower); a one-row list unnested is
-- estimated small. docs/benchmarks.md ("Store and views") has the figures.
CREATE OR REPLACE VIEW item_kinds AS
WITH totals AS (
    SELECT
        application,
        page,
        form,
        item,
        CAST(sum(visits) AS BIGINT) AS visits,
        CAST(sum(filled) AS BIGINT) AS filled,
        CAST(sum(transfer) AS BIGINT) AS transfer,
        CAST(sum(disconnect) AS BIGINT) AS disconnect
    FROM flow_files_unfiltered
    GROUP BY application, page, form, item
),
kinds AS (
    SELECT
        application,
        page,
        form,
        item,
        CASE
            WHEN transfer > 0 THEN 'transfer'
            WHEN visits > 0 AND disconnect = visits AND filled = 0 THEN 'transfer'
            WHEN visits > 0 AND disconnect = visits THEN 'terminal'
            ELSE 'ordinary'
        END AS kind,
        visits,
        filled,
        transfer,
        disconnect
    FROM totals
)
SELECT unnest(kind_row, recursive := true)
FROM (SELECT unnest(list(kinds)) AS kind_row FROM kinds);
