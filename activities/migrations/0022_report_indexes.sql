-- Clinic reports (issue 19 item 4, docs/reports.md): the report queries read the timeline by
-- kind and journey time. A partial index on the kinds the reports count keeps them off a full
-- scan of journey_events (1.1 million rows for 100,000 journeys: ~100 ms a query, nine per
-- page) and costs nothing for the other kinds' writes. INCLUDE (workflow_id) lets a count or
-- the clinic join be answered from the index (journey_events is append-only, so autovacuum
-- keeps its pages all-visible).
--
-- Built in the migration's transaction (no CONCURRENTLY): on a large existing table it holds
-- writes to journey_events for the build (about a second per million rows).
CREATE INDEX IF NOT EXISTS journey_events_report_idx
    ON journey_events (kind, occurred_at) INCLUDE (workflow_id)
    WHERE kind IN ('journey_started', 'session_completed', 'no_show', 'awaiting_season',
                   'spf_attested', 'adverse_event', 'completed', 'further_course');
