-- A consumer round is decided by core-app from the state it read (`round::decide`) and written
-- in one statement that first moves each quote's `next_seq` from the value read; a quote changed
-- meanwhile (expired, or written by another replica after a rebalance) matches no row, and this
-- aborts the statement so that the round is read and decided again. A serialization failure is
-- what it is.
CREATE FUNCTION round_conflict() RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
        MESSAGE = 'a quote changed between reading and writing a consumer round';
END
$$;
