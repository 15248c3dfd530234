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
-- How: flow_files is the data table's current version (a Delta Lake table), which holds exactly
-- the visible rows: every flush replaces a re-fetched job's rows in the same commit that adds
-- the new ones. Defined by harvester.store.base_views_sql() before this file runs.
CREATE OR REPLACE VIEW diagnostic_flow AS
SELECT
    phone,
    window_start,
    window_end,
    application,
    page,
    form,
    item,
    visits,
    filled,
    nomatch,
    noinput,
    transfer,
    disconnect,
    fetched_at
FROM flow_files;
