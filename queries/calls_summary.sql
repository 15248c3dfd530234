-- calls_summary: per phone number and application, the calls of every window in scope added
-- up (the whole store, or the --from/--to range). Never holds the merged ALL rows: summing
-- over phones is safe; the merged number is calls_all_summary.
--
-- Answers: "over the period, which line takes how many calls, and how do they end?"
--
-- Columns: those of calls_summary_by_scope without scope:
--   phone, application, first_day, last_day, days, calls, transferred, transfer_failed,
--   self_service, abandoned, errors, calls_per_day, transfer_rate, transfer_failed_rate,
--   self_service_rate, abandon_rate, errors_per_call
CREATE OR REPLACE VIEW calls_summary AS
SELECT * EXCLUDE (scope)
FROM calls_summary_by_scope
WHERE scope = 'number'
ORDER BY phone, calls DESC, application;
