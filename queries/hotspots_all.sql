-- hotspots_all: hotspots for the merged number ALL (as VoiceTrends adds up every number of the
-- account), over every window in scope. Most trouble (hangups + errors) first.
--
-- Answers: "account-wide, where do callers hang up, and where does recognition fail?"
--
-- Columns: those of hotspots_by_scope without scope:
--   application, page, form, item, kind, visits,
--   hangups, hangup_share, hangup_rate, hangup_rank,
--   errors, nomatch, noinput, error_share, error_rate, error_rank, trouble
CREATE OR REPLACE VIEW hotspots_all AS
SELECT * EXCLUDE (scope)
FROM hotspots_by_scope
WHERE scope = 'all'
ORDER BY trouble DESC, application, page, form, item;
