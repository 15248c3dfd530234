-- hotspots: items ranked by lost calls and recognition errors, every harvested phone number
-- added up (never the ALL rows; the merged number is hotspots_all), over every window in scope
-- (the whole store, or the --from/--to range). Most trouble (hangups + errors) first.
--
-- Answers: "where in the flow do callers hang up, and where does recognition fail?"
--
-- Columns: those of hotspots_by_scope without scope:
--   application, page, form, item, kind, visits,
--   hangups, hangup_share, hangup_rate, hangup_rank,
--   errors, nomatch, noinput, error_share, error_rate, error_rank, trouble
-- (shares are of the application's total and sum to 1 over its items; ranks are within the
-- application; rates are per visit; NULL where a denominator is 0).
CREATE OR REPLACE VIEW hotspots AS
SELECT * EXCLUDE (scope)
FROM hotspots_by_scope
WHERE scope = 'number'
ORDER BY trouble DESC, application, page, form, item;
