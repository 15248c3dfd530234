-- item_outcomes_by_scope: diagnostic_flow with each item's kind, outcomes and rates, for the
-- numbers AND for ALL. A building block: query item_outcomes (numbers) or item_outcomes_all
-- (the merged number) instead, unless you filter on scope yourself. Summing this view over
-- phones counts every call twice (once in its number, once in ALL).
--
-- Answers: "per item and window, how did visits end: filled, no match, no input, hung up,
-- transferred?"
--
-- Columns:
--   scope          VARCHAR  'number' (one phone number) | 'all' (phone = ALL, merged by Plum)
--   phone          VARCHAR  the number, or ALL
--   day            DATE     window_start: the day itself in a daily store, else its first day
--   window_start   DATE     first day of the window (inclusive)
--   window_end     DATE     last day of the window (inclusive)
--   days           INTEGER  days in the window
--   application    VARCHAR  application URL
--   page           VARCHAR  VoiceXML page
--   form           VARCHAR  form id
--   item           VARCHAR  form item name
--   kind           VARCHAR  'ordinary' | 'transfer' | 'terminal' (see item_kinds)
--   visits         BIGINT   entries into the item
--   filled         BIGINT   ended with valid input
--   nomatch        BIGINT   recognition failures: no match
--   noinput        BIGINT   recognition failures: no input
--   errors         BIGINT   nomatch + noinput
--   transfer       BIGINT   calls transferred from the item
--   disconnect     BIGINT   calls that ended while in the item
--   hangups        BIGINT   calls lost here: ended neither by a transfer nor in self-service
--                           (ordinary: disconnect; transfer: visits - transfer, the caller hung
--                           up or the transfer did not connect; terminal: 0)
--   fill_rate      DOUBLE   filled / visits        (NULL when visits = 0, as every rate here)
--   nomatch_rate   DOUBLE   nomatch / visits
--   noinput_rate   DOUBLE   noinput / visits
--   error_rate     DOUBLE   errors / visits
--   hangup_rate    DOUBLE   hangups / visits
--   transfer_rate  DOUBLE   transfer / visits
CREATE OR REPLACE VIEW item_outcomes_by_scope AS
WITH rows AS (
    SELECT
        CASE WHEN f.phone = 'ALL' THEN 'all' ELSE 'number' END AS scope,
        f.phone,
        f.window_start AS day,
        f.window_start,
        f.window_end,
        CAST(f.window_end - f.window_start + 1 AS INTEGER) AS days,
        f.application,
        f.page,
        f.form,
        f.item,
        coalesce(k.kind, 'ordinary') AS kind,
        f.visits,
        f.filled,
        f.nomatch,
        f.noinput,
        f.nomatch + f.noinput AS errors,
        f.transfer,
        f.disconnect
    FROM diagnostic_flow AS f
    LEFT JOIN item_kinds AS k
        ON k.application = f.application
        AND k.page = f.page
        AND k.form = f.form
        AND k.item = f.item
)
SELECT
    *,
    CASE kind
        WHEN 'ordinary' THEN disconnect
        WHEN 'transfer' THEN visits - transfer
        ELSE 0
    END AS hangups,
    filled / nullif(visits, 0) AS fill_rate,
    nomatch / nullif(visits, 0) AS nomatch_rate,
    noinput / nullif(visits, 0) AS noinput_rate,
    errors / nullif(visits, 0) AS error_rate,
    hangups / nullif(visits, 0) AS hangup_rate,
    transfer / nullif(visits, 0) AS transfer_rate
FROM rows;
