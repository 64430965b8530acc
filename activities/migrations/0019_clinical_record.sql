-- The clinical record around the course (issue 19, docs/clinical-record.md): informed consent,
-- photos with their view log, and the patient's satisfaction before the review.
--
-- * consent_texts: a clinic's consent text per language and version. Never edited in place: a
--   new text is a new version (a new row); UPDATE and DELETE are refused.
-- * consent_requirements: "this version is now required" for a clinic, with the progress of
--   asking every open journey again (require_consent), bounded and counted.
-- * consent_records: what the patient signed on their page (typed name, the confirming box,
--   the time, the text version and its hash, an HMAC of the request's address), a paper
--   consent staff recorded with its reference, or a withdrawal. Append-only; the journey gets
--   the record's id as its reference.
-- * photos: baseline and review photos as references (content hash, store, type, size); the
--   bytes live in the photo store (a content-addressed folder or an S3-compatible bucket),
--   never in PostgreSQL or Temporal.
-- * photo_views: every view of a photo (who, when, which). Append-only.
-- * patient_satisfaction: the patient's satisfaction (1-5, optional comment) asked on their
--   page before the review; read by the clinic reports. One answer per journey and course.

CREATE FUNCTION clinical_record_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TABLE consent_texts (
    id          bigserial PRIMARY KEY,
    clinic_id   text NOT NULL REFERENCES clinics (clinic_id),
    language    text NOT NULL CHECK (language ~ '^[a-z]{2,3}(-[A-Z]{2})?$'),
    version     text NOT NULL CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    body_sha256 text NOT NULL CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consent_texts_version_key UNIQUE (clinic_id, language, version)
);
CREATE INDEX consent_texts_clinic_idx ON consent_texts (clinic_id, created_at DESC, id DESC);
CREATE TRIGGER consent_texts_no_update_delete
    BEFORE UPDATE OR DELETE ON consent_texts
    FOR EACH ROW EXECUTE FUNCTION clinical_record_append_only();

CREATE TABLE consent_requirements (
    id           bigserial PRIMARY KEY,
    clinic_id    text NOT NULL REFERENCES clinics (clinic_id),
    version      text NOT NULL,
    requested_by text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Progress of asking the clinic's open journeys again: total found, asked (the journey
    -- took the new version), skipped (already at it), failed (refused or unreachable).
    total        int NOT NULL DEFAULT 0,
    asked        int NOT NULL DEFAULT 0,
    skipped      int NOT NULL DEFAULT 0,
    failed       int NOT NULL DEFAULT 0,
    finished_at  timestamptz,
    last_error   text
);
CREATE INDEX consent_requirements_clinic_idx ON consent_requirements (clinic_id, id DESC);

CREATE TABLE consent_records (
    id              bigserial PRIMARY KEY,
    workflow_id     text NOT NULL,
    patient_id      text NOT NULL,
    clinic_id       text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('patient_signed', 'paper', 'withdrawn')),
    version         text,
    language        text,
    consent_text_id bigint REFERENCES consent_texts (id),
    text_sha256     text,
    typed_name      text CHECK (typed_name IS NULL OR length(typed_name) BETWEEN 1 AND 200),
    confirmed       boolean,
    signed_at       timestamptz NOT NULL,
    address_hmac    text,
    paper_reference text CHECK (paper_reference IS NULL OR length(paper_reference) BETWEEN 1 AND 200),
    reason          text CHECK (reason IS NULL OR length(reason) BETWEEN 1 AND 500),
    staff_id        bigint,
    staff_name      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consent_records_signed CHECK (
        kind <> 'patient_signed'
        OR (typed_name IS NOT NULL AND confirmed AND consent_text_id IS NOT NULL
            AND address_hmac IS NOT NULL)
    ),
    CONSTRAINT consent_records_paper CHECK (
        kind <> 'paper' OR (paper_reference IS NOT NULL AND version IS NOT NULL)
    ),
    CONSTRAINT consent_records_withdrawn CHECK (kind <> 'withdrawn' OR reason IS NOT NULL)
);
CREATE INDEX consent_records_journey_idx ON consent_records (workflow_id, id DESC);
CREATE TRIGGER consent_records_no_update_delete
    BEFORE UPDATE OR DELETE ON consent_records
    FOR EACH ROW EXECUTE FUNCTION clinical_record_append_only();

CREATE TABLE photos (
    id            bigserial PRIMARY KEY,
    workflow_id   text NOT NULL,
    patient_id    text NOT NULL,
    clinic_id     text NOT NULL,
    course_number int NOT NULL DEFAULT 1,
    kind          text NOT NULL CHECK (kind IN ('baseline', 'review')),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    store         text NOT NULL CHECK (store IN ('local', 's3')),
    media_type    text NOT NULL CHECK (media_type IN ('image/jpeg', 'image/png')),
    bytes         int NOT NULL CHECK (bytes > 0),
    width         int NOT NULL CHECK (width > 0),
    height        int NOT NULL CHECK (height > 0),
    note          text CHECK (note IS NULL OR length(note) <= 200),
    uploaded_by   bigint,
    uploader_name text NOT NULL,
    uploaded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photos_journey_idx ON photos (workflow_id, kind, id);

CREATE TABLE photo_views (
    id          bigserial PRIMARY KEY,
    photo_id    bigint NOT NULL REFERENCES photos (id),
    patient_id  text NOT NULL,
    sha256      text NOT NULL,
    staff_id    bigint,
    staff_name  text NOT NULL,
    staff_role  text NOT NULL,
    route       text NOT NULL,
    viewed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photo_views_photo_idx ON photo_views (photo_id, viewed_at DESC);
CREATE INDEX photo_views_patient_idx ON photo_views (patient_id, viewed_at DESC);
CREATE TRIGGER photo_views_no_update_delete
    BEFORE UPDATE OR DELETE ON photo_views
    FOR EACH ROW EXECUTE FUNCTION clinical_record_append_only();
CREATE TRIGGER photo_views_no_truncate
    BEFORE TRUNCATE ON photo_views
    FOR EACH STATEMENT EXECUTE FUNCTION clinical_record_append_only();

CREATE TABLE patient_satisfaction (
    id            bigserial PRIMARY KEY,
    workflow_id   text NOT NULL,
    patient_id    text NOT NULL,
    course_number int NOT NULL DEFAULT 1,
    score         int NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment       text CHECK (comment IS NULL OR length(comment) <= 1000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT patient_satisfaction_once UNIQUE (workflow_id, course_number)
);
CREATE INDEX patient_satisfaction_created_idx ON patient_satisfaction (created_at);
