-- Built-in scheduling (issue 17 item 1, docs/scheduling.md): a clinic's resources (lasers,
-- rooms, practitioners), their working hours, closures, slot rules, the patients' scheduling
-- preferences, and the slot reservations. Double booking is impossible by construction: the
-- exclusion constraint on slot_reservations refuses two active reservations of one resource
-- whose time ranges overlap, whatever the application does.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Slot length by pore grade, turnover, the grid of start times, what a session needs (count
-- of each resource kind) and the clinic's default working hours (for resources without their
-- own), one row per clinic. No row: scheduling defaults (scheduling/resources.py SlotRules).
CREATE TABLE scheduling_rules (
    clinic_id        text PRIMARY KEY REFERENCES clinics (clinic_id),
    slot_minutes     jsonb NOT NULL,
    turnover_minutes int NOT NULL CHECK (turnover_minutes BETWEEN 0 AND 240),
    step_minutes     int NOT NULL CHECK (step_minutes BETWEEN 5 AND 240),
    needs            jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Devices, rooms and practitioners: ids and display labels only (a practitioner's initials or
-- code, never a name). A resource is never deleted (reservations refer to it): ``active``
-- false takes it out of the search.
CREATE TABLE scheduling_resources (
    clinic_id   text NOT NULL REFERENCES clinics (clinic_id),
    resource_id text NOT NULL CHECK (resource_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind        text NOT NULL CHECK (kind IN ('device', 'room', 'practitioner')),
    label       text NOT NULL DEFAULT '' CHECK (length(label) <= 80),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clinic_id, resource_id)
);

-- Working hours, local to the clinic's time zone: weekday 0 = Monday. ``resource_id = ''``
-- holds the clinic's default hours; a resource with rows of its own uses only those.
CREATE TABLE scheduling_hours (
    clinic_id   text NOT NULL REFERENCES clinics (clinic_id),
    resource_id text NOT NULL DEFAULT '',
    weekday     int NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    starts      time NOT NULL,
    ends        time NOT NULL,
    CHECK (starts < ends),
    PRIMARY KEY (clinic_id, resource_id, weekday, starts)
);

-- Closures and holidays: whole days, inclusive; clinic-wide (resource_id NULL) or one
-- resource's. ``source`` 'file' rows are replaced when the clinic file is loaded again; 'staff'
-- rows (API/CLI) are kept.
CREATE TABLE scheduling_closures (
    id          bigserial PRIMARY KEY,
    clinic_id   text NOT NULL REFERENCES clinics (clinic_id),
    resource_id text,
    starts_on   date NOT NULL,
    ends_on     date NOT NULL,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 200),
    source      text NOT NULL DEFAULT 'staff' CHECK (source IN ('file', 'staff')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (starts_on <= ends_on AND ends_on - starts_on <= 366)
);
CREATE INDEX scheduling_closures_clinic_idx ON scheduling_closures (clinic_id, ends_on);

-- A patient's preferred weekdays (0 = Monday), parts of the day and local time ranges
-- ([{"start": "HH:MM", "end": "HH:MM"}]). Preferences order the offered slots; they never
-- exclude one.
CREATE TABLE patient_scheduling_preferences (
    patient_id  text PRIMARY KEY CHECK (patient_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    weekdays    int[] NOT NULL DEFAULT '{}',
    day_parts   text[] NOT NULL DEFAULT '{}',
    time_ranges jsonb NOT NULL DEFAULT '[]',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (weekdays <@ ARRAY[0, 1, 2, 3, 4, 5, 6]),
    CHECK (day_parts <@ ARRAY['morning', 'afternoon', 'evening']::text[])
);

-- One row per resource a session holds. ``during`` is the session plus the turnover after it
-- ([starts_at, ends_at + turnover)); ``starts_at``/``ends_at`` are the session itself. The
-- rows of one session (a device and a practitioner, say) share workflow, course and session;
-- a journey holds at most one active set per session (scheduling/store.py takes a
-- transaction-scoped advisory lock on that key).
CREATE TABLE slot_reservations (
    reservation_id bigserial PRIMARY KEY,
    clinic_id      text NOT NULL,
    resource_id    text NOT NULL,
    during         tstzrange NOT NULL CHECK (NOT isempty(during) AND lower(during) IS NOT NULL
                                             AND upper(during) IS NOT NULL),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    workflow_id    text NOT NULL,
    patient_id     text NOT NULL,
    course_number  int NOT NULL CHECK (course_number BETWEEN 1 AND 1000),
    session_number int NOT NULL CHECK (session_number BETWEEN 1 AND 100),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'released')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz,
    FOREIGN KEY (clinic_id, resource_id) REFERENCES scheduling_resources (clinic_id, resource_id),
    -- Double booking is impossible: no two active reservations of one resource overlap.
    CONSTRAINT slot_reservations_no_overlap EXCLUDE USING gist (
        clinic_id WITH =, resource_id WITH =, during WITH &&
    ) WHERE (status = 'active')
);
CREATE INDEX slot_reservations_session_idx
    ON slot_reservations (workflow_id, course_number, session_number) WHERE status = 'active';
CREATE INDEX slot_reservations_during_idx
    ON slot_reservations USING gist (clinic_id, during) WHERE status = 'active';
