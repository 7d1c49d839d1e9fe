-- W3C trace context of each application, carried on to the insurer calls and the outbox
-- events (a Kafka header), so one quote is one trace across the services. Ids only.
ALTER TABLE applications ADD COLUMN traceparent text;
ALTER TABLE outbox ADD COLUMN traceparent text;
