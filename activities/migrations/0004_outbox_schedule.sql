-- Journey v2: a reminder is written with its booking and a send time (next_attempt_at), and a
-- later step (a move, a pause, a withdraw) cancels it by key before it goes out.
ALTER TABLE notification_outbox DROP CONSTRAINT IF EXISTS notification_outbox_status_check;
ALTER TABLE notification_outbox ADD CONSTRAINT notification_outbox_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled'));
ALTER TABLE notification_outbox ADD COLUMN cancelled_at timestamptz;
