-- calls_by_scope: per phone (numbers AND ALL), application and window, how the calls ended.
-- A building block: query calls (numbers) or calls_all (the merged number) instead; summing
-- this view over phones counts every call twice.
--
-- Answers: "how many calls did this line take, and how many were transferred, failed at a
-- transfer, finished in self-service or were abandoned in a menu?" Every call ends in exactly
-- one item (shared/spec/voicetrends-api.md, "What the example's numbers add up to"), so
--   calls = transferred + transfer_failed + self_service + abandoned
-- whenever the identities of the API notes hold (data_quality lists where they do not).
-- Item kinds come from item_kinds.
--
-- Columns:
--   scope                  VARCHAR  'number' | 'all'
--   phone                  VARCHAR  the number, or ALL
--   day                    DATE     window_start: the day itself in a daily store
--   window_start           DATE     first day of the window (inclusive)
--   window_end             DATE     last day of the window (inclusive)
--   days                   INTEGER  days in the window
--   application            VARCHAR  application URL
--   calls                  BIGINT   sum(disconnect) over the application's items
--   transferred            BIGINT   sum(transfer): calls handed to an agent
--   transfer_failed        BIGINT   visits of transfer items minus their transfers: calls
--                                   that reached a transfer point and ended there untransferred
--   self_service           BIGINT   visits of terminal items: finished without an agent
--   abandoned              BIGINT   disconnect at ordinary items: hung up in a menu or input
--   visits                 BIGINT   item visits, all kinds
--   errors                 BIGINT   nomatch + noinput, all items
--   transfer_rate          DOUBLE   transferred / calls (NULL when calls = 0, as every rate)
--   transfer_failed_rate   DOUBLE   transfer_failed / calls
--   self_service_rate      DOUBLE   self_service / calls
--   abandon_rate           DOUBLE   abandoned / calls
--   errors_per_call        DOUBLE   errors / calls
CREATE OR REPLACE VIEW calls_by_scope AS
WITH sums AS (
    SELECT
        scope,
        phone,
        day,
        window_start,
        window_end,
        days,
        application,
        CAST(sum(disconnect) AS BIGINT) AS calls,
        CAST(sum(transfer) AS BIGINT) AS transferred,
        CAST(coalesce(sum(visits - transfer) FILTER (WHERE kind = 'transfer'), 0) AS BIGINT)
            AS transfer_failed,
        CAST(coalesce(sum(visits) FILTER (WHERE kind = 'terminal'), 0) AS BIGINT)
            AS self_service,
        CAST(coalesce(sum(disconnect) FILTER (WHERE kind = 'ordinary'), 0) AS BIGINT)
            AS abandoned,
        CAST(sum(visits) AS BIGINT) AS visits,
        CAST(sum(errors) AS BIGINT) AS errors
    FROM item_outcomes_by_scope
    GROUP BY scope, phone, day, window_start, window_end, days, application
)
SELECT
    *,
    transferred / nullif(calls, 0) AS transfer_rate,
    transfer_failed / nullif(calls, 0) AS transfer_failed_rate,
    self_service / nullif(calls, 0) AS self_service_rate,
    abandoned / nullif(calls, 0) AS abandon_rate,
    errors / nullif(calls, 0) AS errors_per_call
FROM sums;
