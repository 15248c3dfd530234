-- diagnostic_flow: the harvested Diagnostic Flow data, one row per job and item.
--
-- Answers: "what did VoiceTrends report for this phone (or ALL) over this window, per
-- application, page, form and item?", with the latest successful fetch of each job and never a
-- duplicate: a job fetched again (lookback, refetch, a clipped window grown) shows only its
-- newest rows; a re-fetch that failed leaves the previous rows visible.
--
-- Columns:
--   phone           VARCHAR      the number asked for, or ALL for the merged account
--   window_start    DATE         first day of the requested window (inclusive)
--   window_end      DATE         last day of the requested window (inclusive)
--   application     VARCHAR      application URL ('' if the reply did not name one)
--   page            VARCHAR      VoiceXML page
--   form            VARCHAR      form id
--   item            VARCHAR      field (form item) name
--   visits          BIGINT       entries into the item
--   filled          BIGINT       ended with valid input
--   nomatch         BIGINT       recognition failures: no match
--   noinput         BIGINT       recognition failures: no input
--   transfer        BIGINT       calls transferred from the item
--   disconnect      BIGINT       calls that ended while in the item
--   fetched_at      TIMESTAMPTZ  when the reply was received (UTC)
--
-- How: rows live in flow_files (every data file, including superseded and orphaned rows);
-- ledger_current holds, per job, the latest ledger record whose state is done. A row is visible
-- iff it belongs to that fetch: same (fetch_id, batch_id), checked together with the job key.
-- Both relations are defined by harvester.store.base_views_sql() before this file runs.
CREATE OR REPLACE VIEW diagnostic_flow AS
SELECT
    f.phone,
    f.window_start,
    f.window_end,
    f.application,
    f.page,
    f.form,
    f.item,
    f.visits,
    f.filled,
    f.nomatch,
    f.noinput,
    f.transfer,
    f.disconnect,
    f.fetched_at
FROM ledger_current AS l
JOIN flow_files AS f
    ON f.fetch_id = l.fetch_id
    AND f.batch_id = l.batch_id
    AND f.phone = l.phone
    AND f.period = l.period;
