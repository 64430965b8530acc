-- Interoperability (docs/integrations.md): outbound webhook subscribers and their deliveries,
-- calendar feed tokens, external ids of integrations, inbound idempotency scoped per integration.

-- Who receives the journey's events: per clinic, a URL, the event types (empty: every type)
-- and the Standard Webhooks secret ("whsec_" + base64) the deliveries are signed with.
CREATE TABLE webhook_subscribers (
    id          bigserial PRIMARY KEY,
    clinic_id   text NOT NULL REFERENCES clinics (clinic_id),
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    event_types text[] NOT NULL DEFAULT '{}',
    secret      text NOT NULL CHECK (secret LIKE 'whsec_%'),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
CREATE INDEX webhook_subscribers_clinic_idx ON webhook_subscribers (clinic_id)
    WHERE disabled_at IS NULL;

-- Journey events not yet fanned out to subscribers. Filled by a trigger in the transaction that
-- appends the event (record_step, or the API's request_refused), so no event is ever missed:
-- a poller keyed on journey_events.id alone could skip an id whose transaction commits after a
-- higher one was read. The fan-out (activities/webhooks.py) empties it.
CREATE TABLE webhook_fanout (
    event_id bigint PRIMARY KEY
);

CREATE FUNCTION journey_events_enqueue_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_fanout (event_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER journey_events_enqueue_webhooks
    AFTER INSERT ON journey_events
    FOR EACH ROW EXECUTE FUNCTION journey_events_enqueue_webhooks();

-- One row per (subscriber, event): the outbound outbox. message_id is the webhook-id header,
-- the same on every retry and replay, so receivers de-duplicate on it.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    subscriber_id   bigint NOT NULL REFERENCES webhook_subscribers (id),
    event_id        bigint NOT NULL,
    workflow_id     text NOT NULL,
    message_id      text NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'delivered', 'dead')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    lease_token     uuid,
    last_error      text,
    last_status     int,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    dead_at         timestamptz,
    replays         int NOT NULL DEFAULT 0,
    CONSTRAINT webhook_deliveries_key UNIQUE (subscriber_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- Ordering per journey: a delivery waits while an earlier event of its journey is still open.
CREATE INDEX webhook_deliveries_open_idx ON webhook_deliveries (subscriber_id, workflow_id, event_id)
    WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (dead_at) WHERE status = 'dead';

-- Calendar feed links: only the sha256 of the token is stored; revoking ends the link.
CREATE TABLE calendar_feeds (
    id         bigserial PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    scope      text NOT NULL CHECK (scope IN ('patient', 'clinic')),
    patient_id text,
    clinic_id  text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT calendar_feeds_subject CHECK (
        (scope = 'patient' AND patient_id IS NOT NULL)
        OR (scope = 'clinic' AND clinic_id IS NOT NULL)
    )
);
CREATE INDEX calendar_feeds_patient_idx ON calendar_feeds (patient_id);

-- An integration's own ids for our patients and sessions (e.g. the booking system's visit id).
CREATE TABLE external_ids (
    integration    text NOT NULL CHECK (length(integration) BETWEEN 1 AND 64),
    kind           text NOT NULL CHECK (kind IN ('patient', 'appointment')),
    external_id    text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 200),
    patient_id     text NOT NULL REFERENCES patients (patient_id),
    session_number int CHECK (session_number BETWEEN 1 AND 100),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, kind, external_id),
    CONSTRAINT external_ids_session CHECK (kind = 'patient' OR session_number IS NOT NULL)
);
