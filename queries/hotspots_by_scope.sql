-- hotspots_by_scope: items ranked by lost calls and by recognition errors within their
-- application, over every window in scope (the whole store, or the --from/--to range), for the
-- numbers added up AND for ALL. A building block: query hotspots (numbers) or hotspots_all
-- (the merged number) instead.
--
-- Answers: "where in the flow do callers hang up, and where does recognition fail?"
--
-- Columns:
--   scope          VARCHAR  'number' (every harvested number added up) | 'all' (phone ALL)
--   application    VARCHAR  application URL
--   page           VARCHAR  VoiceXML page
--   form           VARCHAR  form id
--   item           VARCHAR  form item name
--   kind           VARCHAR  'ordinary' | 'transfer' | 'terminal' (see item_kinds)
--   visits         BIGINT   entries into the item
--   hangups        BIGINT   calls lost here (see item_outcomes_by_scope): hung up in a menu, or
--                           ended at a transfer point without being transferred
--   hangup_share   DOUBLE   hangups / the application's hangups (NULL when it has none);
--                           sums to 1 over an application's items
--   hangup_rate    DOUBLE   hangups / visits (NULL when visits = 0)
--   hangup_rank    BIGINT   1 = most hangups in the application
--   errors         BIGINT   nomatch + noinput
--   nomatch        BIGINT   recognition failures: no match
--   noinput        BIGINT   recognition failures: no input
--   error_share    DOUBLE   errors / the application's errors (NULL when it has none)
--   error_rate     DOUBLE   errors / visits (NULL when visits = 0)
--   error_rank     BIGINT   1 = most errors in the application
--   trouble        BIGINT   hangups + errors: the sort key (most trouble first)
CREATE OR REPLACE VIEW hotspots_by_scope AS
WITH items AS (
    SELECT
        scope,
        application,
        page,
        form,
        item,
        kind,
        CAST(sum(visits) AS BIGINT) AS visits,
        CAST(sum(hangups) AS BIGINT) AS hangups,
        CAST(sum(errors) AS BIGINT) AS errors,
        CAST(sum(nomatch) AS BIGINT) AS nomatch,
        CAST(sum(noinput) AS BIGINT) AS noinput
    FROM item_outcomes_by_scope
    GROUP BY scope, application, page, form, item, kind
)
SELECT
    scope,
    application,
    page,
    form,
    item,
    kind,
    visits,
    hangups,
    hangups / nullif(sum(hangups) OVER app, 0) AS hangup_share,
    hangups / nullif(visits, 0) AS hangup_rate,
    rank() OVER (app ORDER BY hangups DESC) AS hangup_rank,
    errors,
    nomatch,
    noinput,
    errors / nullif(sum(errors) OVER app, 0) AS error_share,
    errors / nullif(visits, 0) AS error_rate,
    rank() OVER (app ORDER BY errors DESC) AS error_rank,
    hangups + errors AS trouble
FROM items
WINDOW app AS (PARTITION BY scope, application);
