-- Personal data is kept only for the retention period: after it, an application's request
-- (names, passport, licence, VIN, plate) is erased; the application and its tasks stay as
-- anonymous statistics (which insurer answered what, and when).
ALTER TABLE applications ALTER COLUMN request DROP NOT NULL;
ALTER TABLE applications ADD COLUMN purged_at timestamptz;
CREATE INDEX applications_unpurged ON applications (created_at) WHERE purged_at IS NULL;
