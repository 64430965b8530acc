-- Staff dashboard sessions (docs/security.md). The cookie holds a random session id, never the
-- staff token; only the id's sha256 is stored. A session ends at logout (ended_at), at
-- expires_at, or as soon as its staff user is disabled (the lookup joins staff_users). The
-- CSRF token of the dashboard's forms is bound to the session.
CREATE TABLE staff_sessions (
    id_hash    text PRIMARY KEY,
    staff_id   bigint NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz
);
CREATE INDEX staff_sessions_staff_idx ON staff_sessions (staff_id) WHERE ended_at IS NULL;
