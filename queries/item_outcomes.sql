-- item_outcomes: per phone number, item and window, how visits ended, with rates. Never holds
-- the merged ALL rows, so sums over phones are the account's numbers (those harvested); the
-- merged number as Plum reports it is item_outcomes_all.
--
-- Answers: "for this number, which items fail recognition or lose callers, and how often?"
--
-- Columns: those of item_outcomes_by_scope without scope:
--   phone, day, window_start, window_end, days, application, page, form, item, kind,
--   visits, filled, nomatch, noinput, errors, transfer, disconnect, hangups,
--   fill_rate, nomatch_rate, noinput_rate, error_rate, hangup_rate, transfer_rate
-- (rates are DOUBLE shares of visits, NULL where visits = 0).
CREATE OR REPLACE VIEW item_outcomes AS
SELECT * EXCLUDE (scope)
FROM item_outcomes_by_scope
WHERE scope = 'number';
