"""Proof of the Email BCC archive: the hash ledger, reading an archive store back, archive sinks."""
