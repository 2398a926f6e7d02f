"""Everything the tests share, and the only place tests import helpers from.

- ``helpers``: real child processes (fork), the CLI as a subprocess, fd introspection,
  os-call fault injection;
- ``ltx_bytes``: LTX files built byte by byte, and the bitwise CRC-64 reference;
- ``plans``: replica listings written as TXID ranges;
- ``synthetic``: a replica fed with generated LTX files;
- ``replicate_workload``: an application database and its replay oracle;
- ``litestream_peer``: the real Litestream 0.5.17 binary;
- ``fault_counts``: how often each fault was really exercised;
- ``rss``: peak-RSS probes for the benchmarks.
"""
