-- calls_all_summary: per application, the merged number ALL's calls of every window in scope
-- added up (the whole store, or the --from/--to range). The demo's first table.
--
-- Answers: "account-wide over the period, how many calls per application, and what share was
-- transferred, failed at a transfer, finished in self-service or was abandoned?"
--
-- Columns: those of calls_summary_by_scope without scope and phone:
--   application, first_day, last_day, days, calls, transferred, transfer_failed,
--   self_service, abandoned, errors, calls_per_day, transfer_rate, transfer_failed_rate,
--   self_service_rate, abandon_rate, errors_per_call
CREATE OR REPLACE VIEW calls_all_summary AS
SELECT * EXCLUDE (scope, phone)
FROM calls_summary_by_scope
WHERE scope = 'all'
ORDER BY calls DESC, application;
