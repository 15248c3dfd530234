-- calls: per phone number, application and day (window), how the calls ended. Never holds the
-- merged ALL rows, so summing over phones gives the harvested numbers' total; the merged
-- number as Plum reports it is calls_all (equal to that sum when every number is harvested).
--
-- Answers: "per line and day, how many calls, and what share was transferred, failed at a
-- transfer, finished in self-service or was abandoned in a menu?"
--
-- Columns: those of calls_by_scope without scope:
--   phone, day, window_start, window_end, days, application,
--   calls, transferred, transfer_failed, self_service, abandoned, visits, errors,
--   transfer_rate, transfer_failed_rate, self_service_rate, abandon_rate, errors_per_call
-- (counts BIGINT, rates DOUBLE shares of calls, NULL where calls = 0). Definitions and item
-- kinds: see calls_by_scope and item_kinds.
CREATE OR REPLACE VIEW calls AS
SELECT * EXCLUDE (scope)
FROM calls_by_scope
WHERE scope = 'number'
ORDER BY day, phone, application;
