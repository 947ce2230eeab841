"""One rank's recording: the ``Run`` lifecycle and metric hot path, the journal and its writer,
the PROV-JSON builder, content identity, code/environment context, distributed identity,
signal and exit handling, and ``recover`` for a process that died."""
