-- Issue 18 items 2 and 3 (docs/messaging.md): patients' replies, consent to be contacted per
-- channel, and each clinic's quiet hours and essential message kinds.

-- Every reply a patient sent (SMS or e-mail), once per provider message id. The text is PHI-ish:
-- it stays here; the journey receives only the reply's id, its kind and the session.
CREATE TABLE patient_replies (
    id                  bigserial PRIMARY KEY,
    provider_message_id text NOT NULL UNIQUE,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    patient_id          text,            -- NULL: no patient has that phone or address
    workflow_id         text,
    clinic_id           text,
    sender              text NOT NULL,   -- the phone number or address it came from
    body                text NOT NULL,
    kind                text NOT NULL
        CHECK (kind IN ('confirm', 'reschedule', 'other', 'stop', 'start')),
    session_number      int,             -- the session of the latest message it answers
    answers_outbox_id   bigint,          -- that message (notification_outbox.id)
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- What the journey made of it: applied, duplicate, a staff task, journey_closed, unmatched;
    -- NULL until the journey answered (Temporal down: the provider's retry reports it again).
    outcome             text,
    outcome_detail      text,
    handled_at          timestamptz
);
CREATE INDEX patient_replies_workflow_idx ON patient_replies (workflow_id, received_at);
CREATE INDEX patient_replies_clinic_idx ON patient_replies (clinic_id, received_at);

-- Consent to be contacted, per patient per channel: a row with opted_out_at set means "do not
-- send non-essential messages on this channel". START clears it (opted_in_at); `how` says which
-- word on which message did it (or staff).
CREATE TABLE contact_optouts (
    patient_id    text NOT NULL,
    channel       text NOT NULL CHECK (channel IN ('email', 'sms')),
    clinic_id     text NOT NULL,
    opted_out_at  timestamptz,
    opted_in_at   timestamptz,
    how           text NOT NULL,
    reply_id      bigint REFERENCES patient_replies (id),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, channel)
);
CREATE INDEX contact_optouts_clinic_idx ON contact_optouts (clinic_id, updated_at);

-- Quiet hours (clinic's local time; start > end spans midnight; equal: none) and the message
-- kinds the clinic treats as essential (sent to the remaining channel, or a staff alert, when
-- the patient opted out). NULL: the defaults in activities/contact.py.
ALTER TABLE clinics ADD COLUMN quiet_hours_start time NOT NULL DEFAULT '20:00';
ALTER TABLE clinics ADD COLUMN quiet_hours_end time NOT NULL DEFAULT '08:00';
ALTER TABLE clinics ADD COLUMN essential_kinds text[];

-- A message held back by an opt-out is 'cancelled' with the reason in last_error.
