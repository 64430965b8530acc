-- Matching a patient's reply to the patient (activities/replies.py): by the phone number's
-- digits or the e-mail address without case, exactly as the queries write them, so an inbound
-- reply is an index lookup rather than a scan of every patient.
CREATE INDEX patients_phone_digits_idx ON patients ((regexp_replace(phone, '[^0-9+]', '', 'g')));
CREATE INDEX patients_email_lower_idx ON patients ((lower(email)));
