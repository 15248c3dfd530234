-- item_outcomes_all: item_outcomes for the merged number ALL (every number of the account, as
-- VoiceTrends adds them up), per item and window. No phone column: there is only one.
--
-- Answers: "account-wide, which items fail recognition or lose callers, and how often?"
--
-- Columns: those of item_outcomes_by_scope without scope and phone:
--   day, window_start, window_end, days, application, page, form, item, kind,
--   visits, filled, nomatch, noinput, errors, transfer, disconnect, hangups,
--   fill_rate, nomatch_rate, noinput_rate, error_rate, hangup_rate, transfer_rate
CREATE OR REPLACE VIEW item_outcomes_all AS
SELECT * EXCLUDE (scope, phone)
FROM item_outcomes_by_scope
WHERE scope = 'all';
