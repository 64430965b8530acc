-- Issue 18 (docs/messaging.md): what the provider says became of a sent message. `status` stays
-- the dispatcher's (pending/sending/sent/failed/cancelled); `delivery_status` is the provider's
-- view, updated by the channel's answer and by its status callbacks (api/routes/messaging.py):
-- queued, sent, delivered, failed (with `delivery_error`). `provider_message_id` is the
-- provider's id (an SMS sid, an e-mail Message-ID), which the callbacks name.
ALTER TABLE notification_outbox ADD COLUMN delivery_status text
    CHECK (delivery_status IN ('queued', 'sent', 'delivered', 'failed'));
ALTER TABLE notification_outbox ADD COLUMN delivery_error text;
ALTER TABLE notification_outbox ADD COLUMN delivery_updated_at timestamptz;
ALTER TABLE notification_outbox ADD COLUMN provider_message_id text;
CREATE UNIQUE INDEX IF NOT EXISTS notification_outbox_provider_message_idx
    ON notification_outbox (provider_message_id) WHERE provider_message_id IS NOT NULL;
