"""ltxpool's workers: the LTX codec, the replica directory and its atomic writer,
compaction, the janitor, ingest, restore, the supervisor and the command line."""
