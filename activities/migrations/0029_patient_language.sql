-- Issue 18 item 4 (docs/languages.md): the patient's language, and each clinic's default for
-- new patients. The list is activities/i18n.py's LANGUAGES (a catalog exists for each); adding a
-- language adds it to both checks in a new migration.
ALTER TABLE clinics ADD COLUMN default_language text NOT NULL DEFAULT 'en'
    CONSTRAINT clinics_default_language_known
    CHECK (default_language IN ('en', 'en-US', 'de', 'fr', 'es'));

-- Existing patients read English, as before. Enrolment writes the language chosen, else the
-- clinic's default.
ALTER TABLE patients ADD COLUMN language text NOT NULL DEFAULT 'en'
    CONSTRAINT patients_language_known
    CHECK (language IN ('en', 'en-US', 'de', 'fr', 'es'));
