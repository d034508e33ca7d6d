"""Pure model logic: interest state, decay and ranking. No I/O here."""
