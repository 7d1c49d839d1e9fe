-- The W3C traceparent of the request that created the quote (the span that stored it), so its
-- event streams join the quote's trace. Ids only: nothing personal.
ALTER TABLE quotes ADD COLUMN traceparent text;
