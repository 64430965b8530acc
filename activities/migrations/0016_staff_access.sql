-- Staff access for a clinic chain (issue 16, docs/security.md "Staff access").
--
-- * staff_users gains the roles of the permission table (api/access/permissions.py):
--   reception, clinician, manager, admin ('staff' stays as the old name of reception), the
--   clinics a member may see (NULL: every clinic, an organisation admin), and the OpenID
--   Connect identity (issuer, subject) of members who sign in through the provider.
-- * api_tokens: named, scoped (roles, clinics), expiring, revocable machine credentials owned
--   by a member; only the sha256 is stored; a disabled owner's tokens stop at once (the lookup
--   joins staff_users).
-- * staff_sessions remember how the member signed in (token or oidc).
-- * access_log: who viewed or changed which patient's journey, when, from where (ids only);
--   append-only like journey_events.
ALTER TABLE staff_users DROP CONSTRAINT staff_users_role_check;
ALTER TABLE staff_users ADD CONSTRAINT staff_users_role_check
    CHECK (role IN ('staff', 'reception', 'clinician', 'manager', 'admin'));
ALTER TABLE staff_users
    ADD COLUMN clinics      text[],
    ADD COLUMN oidc_issuer  text,
    ADD COLUMN oidc_subject text,
    ADD COLUMN rotated_at   timestamptz;
CREATE UNIQUE INDEX staff_users_oidc_idx ON staff_users (oidc_issuer, oidc_subject)
    WHERE oidc_subject IS NOT NULL;

ALTER TABLE staff_sessions ADD COLUMN via text NOT NULL DEFAULT 'token'
    CHECK (via IN ('token', 'oidc'));

CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    staff_id     bigint NOT NULL REFERENCES staff_users (id),
    roles        text[] NOT NULL
        CHECK (roles <@ ARRAY['reception', 'clinician', 'manager', 'admin']::text[]
               AND cardinality(roles) >= 1),
    clinics      text[],
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_staff_idx ON api_tokens (staff_id);

CREATE TABLE access_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    staff_id   bigint,
    token_id   bigint,
    action     text NOT NULL CHECK (action IN ('view', 'change', 'export', 'denied')),
    permission text NOT NULL,
    route      text NOT NULL,
    patient_id text,
    clinic_id  text,
    client     text
);
CREATE INDEX access_log_at_idx ON access_log (at DESC, id DESC);
CREATE INDEX access_log_patient_idx ON access_log (patient_id, at DESC) WHERE patient_id IS NOT NULL;

CREATE FUNCTION access_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER access_log_no_update_delete
    BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_append_only();
CREATE TRIGGER access_log_no_truncate
    BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();
