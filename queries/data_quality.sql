-- data_quality: every stored row, application window and ALL total that breaks an identity of
-- the API notes (shared/spec/voicetrends-api.md), with the rule and by how much. The harvester
-- never rejects data for this: the rows stay in diagnostic_flow, this view points at them.
-- Empty when every identity holds (as on the simulator's data, where they hold by
-- construction). Covers the numbers and ALL; nothing here is a count to add up.
--
-- Answers: "can I trust these numbers? where do the counters not add up, and by how much?"
--
-- Rules (kinds from item_kinds):
--   level 'row': one stored row
--     visits_add_up        ordinary item: visits = filled + nomatch + noinput + disconnect
--     ends_call            transfer or terminal item: disconnect = visits
--     filled_is_transfer   transfer item: filled = transfer
--     transfer_in_visits   any item: transfer <= visits (expected is the bound)
--     no_negative          any item: no counter below 0 (actual is the lowest counter)
--     unique_item          an item appears once per reply (actual is how often it does)
--   level 'application': one phone, window and application
--     calls_equal_entry    calls = sum(disconnect) = visits of the entry item (the first item
--                          every call visits once). The reply does not say which item that
--                          is, so the rule holds when some item has visits = calls; actual is
--                          the visits of the item closest to calls
--   level 'account': one window and item, ALL against the harvested numbers
--     all_covers_numbers   ALL merges every number of the account, so each of its counters is
--                          at least the sum over the harvested numbers (checked only where an
--                          ALL job of that window is held; expected is ALL's value, the bound).
--                          A day still settling (late data) fetched for ALL and a number at
--                          different times can break it too: re-fetching both settles it
--   level 'ledger': one day request economy derived (harvest.economy, issue 14)
--     ranges_add_up        a range reply = the sum of its days: a direct fetch of the day
--                          disagreed with its derivation (identity holds the difference);
--                          derivation was turned off for the store and the days re-fetched
--
-- Columns:
--   level         VARCHAR  'row' | 'application' | 'account' | 'ledger'
--   rule          VARCHAR  the rule's name (above)
--   identity      VARCHAR  the identity, in words (account rules name the counter)
--   phone         VARCHAR  the number, or ALL
--   window_start  DATE     first day of the window (inclusive)
--   window_end    DATE     last day of the window (inclusive)
--   application   VARCHAR  application URL
--   page          VARCHAR  VoiceXML page (NULL for application rules)
--   form          VARCHAR  form id (NULL for application rules)
--   item          VARCHAR  form item name (NULL for application rules)
--   kind          VARCHAR  the item's kind (NULL for application rules)
--   expected      BIGINT   what the identity expects (or the bound it must not pass)
--   actual        BIGINT   what the data says
--   difference    BIGINT   actual - expected
CREATE OR REPLACE VIEW data_quality AS
WITH r AS (
    SELECT * FROM item_outcomes_by_scope
),
row_rules AS (
    SELECT 'visits_add_up' AS rule, 'visits = filled + nomatch + noinput + disconnect' AS identity,
           phone, window_start, window_end, application, page, form, item, kind,
           visits AS expected, filled + nomatch + noinput + disconnect AS actual
    FROM r
    WHERE kind = 'ordinary' AND visits <> filled + nomatch + noinput + disconnect
    UNION ALL
    SELECT 'ends_call', 'disconnect = visits (a ' || kind || ' item ends every call it gets)',
           phone, window_start, window_end, application, page, form, item, kind,
           visits, disconnect
    FROM r
    WHERE kind IN ('transfer', 'terminal') AND disconnect <> visits
    UNION ALL
    SELECT 'filled_is_transfer', 'filled = transfer (a transfer item)',
           phone, window_start, window_end, application, page, form, item, kind,
           transfer, filled
    FROM r
    WHERE kind = 'transfer' AND filled <> transfer
    UNION ALL
    SELECT 'transfer_in_visits', 'transfer <= visits',
           phone, window_start, window_end, application, page, form, item, kind,
           visits, transfer
    FROM r
    WHERE transfer > visits
    UNION ALL
    SELECT 'no_negative', 'every counter >= 0',
           phone, window_start, window_end, application, page, form, item, kind,
           0, least(visits, filled, nomatch, noinput, transfer, disconnect)
    FROM r
    WHERE least(visits, filled, nomatch, noinput, transfer, disconnect) < 0
    UNION ALL
    SELECT 'unique_item', 'an item appears once per reply',
           phone, window_start, window_end, application, page, form, item, any_value(kind),
           1, count(*)
    FROM r
    GROUP BY phone, window_start, window_end, application, page, form, item
    HAVING count(*) > 1
),
groups AS (
    SELECT phone, window_start, window_end, application,
           CAST(sum(disconnect) AS BIGINT) AS calls
    FROM r
    GROUP BY phone, window_start, window_end, application
),
application_rules AS (
    SELECT 'calls_equal_entry' AS rule,
           'calls = sum(disconnect) = visits of the entry item' AS identity,
           phone, window_start, window_end, application,
           CAST(NULL AS VARCHAR) AS page, CAST(NULL AS VARCHAR) AS form,
           CAST(NULL AS VARCHAR) AS item, CAST(NULL AS VARCHAR) AS kind,
           any_value(g.calls) AS expected,
           -- the item closest to calls; of two as close, the more visited
           arg_min(r.visits, [abs(r.visits - g.calls), -r.visits]) AS actual
    FROM groups AS g
    JOIN r USING (phone, window_start, window_end, application)
    GROUP BY phone, window_start, window_end, application
    HAVING NOT bool_or(r.visits = g.calls)
),
numbers AS (
    SELECT window_start, window_end, application, page, form, item, any_value(kind) AS kind,
           CAST(sum(visits) AS BIGINT) AS visits, CAST(sum(filled) AS BIGINT) AS filled,
           CAST(sum(nomatch) AS BIGINT) AS nomatch, CAST(sum(noinput) AS BIGINT) AS noinput,
           CAST(sum(transfer) AS BIGINT) AS transfer,
           CAST(sum(disconnect) AS BIGINT) AS disconnect
    FROM r
    WHERE scope = 'number'
    GROUP BY window_start, window_end, application, page, form, item
),
all_jobs AS (
    SELECT DISTINCT window_start, window_end FROM ledger_current WHERE phone = 'ALL'
),
pairs AS (
    SELECT n.window_start, n.window_end, n.application, n.page, n.form, n.item, n.kind,
           c.counter,
           CASE c.counter
               WHEN 'visits' THEN n.visits WHEN 'filled' THEN n.filled
               WHEN 'nomatch' THEN n.nomatch WHEN 'noinput' THEN n.noinput
               WHEN 'transfer' THEN n.transfer ELSE n.disconnect
           END AS numbers_value,
           coalesce(CASE c.counter
               WHEN 'visits' THEN a.visits WHEN 'filled' THEN a.filled
               WHEN 'nomatch' THEN a.nomatch WHEN 'noinput' THEN a.noinput
               WHEN 'transfer' THEN a.transfer ELSE a.disconnect
           END, 0) AS all_value
    FROM numbers AS n
    JOIN all_jobs AS j ON j.window_start = n.window_start AND j.window_end = n.window_end
    LEFT JOIN r AS a
        ON a.phone = 'ALL'
        AND a.window_start = n.window_start AND a.window_end = n.window_end
        AND a.application = n.application
        AND a.page = n.page AND a.form = n.form AND a.item = n.item
    CROSS JOIN (
        VALUES ('visits'), ('filled'), ('nomatch'), ('noinput'), ('transfer'), ('disconnect')
    ) AS c (counter)
),
account_rules AS (
    SELECT 'all_covers_numbers' AS rule,
           'ALL ' || counter || ' >= sum of the numbers'' ' || counter AS identity,
           'ALL' AS phone, window_start, window_end, application, page, form, item, kind,
           all_value AS expected, numbers_value AS actual
    FROM pairs
    WHERE numbers_value > all_value
),
ledger_rules AS (
    SELECT DISTINCT 'ranges_add_up' AS rule, 'range = sum of its days: ' || mismatch AS identity,
           phone, window_start, window_end, CAST(NULL AS VARCHAR) AS application,
           CAST(NULL AS VARCHAR) AS page, CAST(NULL AS VARCHAR) AS form,
           CAST(NULL AS VARCHAR) AS item, CAST(NULL AS VARCHAR) AS kind,
           CAST(NULL AS BIGINT) AS expected, CAST(NULL AS BIGINT) AS actual
    FROM ledger_files
    WHERE mismatch IS NOT NULL
)
SELECT level, rule, identity, phone, window_start, window_end, application, page, form, item,
       kind, CAST(expected AS BIGINT) AS expected, CAST(actual AS BIGINT) AS actual,
       CAST(actual - expected AS BIGINT) AS difference
FROM (
    SELECT 'row' AS level, * FROM row_rules
    UNION ALL
    SELECT 'application', * FROM application_rules
    UNION ALL
    SELECT 'account', * FROM account_rules
    UNION ALL
    SELECT 'ledger', * FROM ledger_rules
)
ORDER BY window_start, phone, application, level, rule, page, form, item;
