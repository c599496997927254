"""Fault drills against the real product: `make drills` (python -m ingestion_assets_tests.drills).

Each drill starts what it needs (the daemon on a PostgreSQL instance, the reference ml-analyze,
loopback HTTP sources), breaks something on purpose, checks what the courier did, and stops
everything it started. The runner prints one table row per drill and writes the figures into
docs/reliability.md. These modules are not pytest tests (no test_*.py): they take minutes.
"""

# (name, module, lane, hard timeout in seconds). Drills of different lanes run at the same time
# (much of a drill is waiting: retry backoffs, run monitoring, ml-analyze's row delay); a lane's
# drills run one after the other. A module may set TIMEOUT_S to replace the timeout given here.
DRILLS = [
    ("load", "ingestion_assets_tests.drills.load", 1, 600),
    ("daemon-restart", "ingestion_assets_tests.drills.daemon_restart", 2, 300),
    ("ml-restart", "ingestion_assets_tests.drills.ml_restart", 2, 480),
    ("disk-full", "ingestion_assets_tests.drills.disk_full", 2, 300),
    ("hostile", "ingestion_assets_tests.drills.hostile", 2, 300),
    ("cleanup", "ingestion_assets_tests.drills.cleanup", 2, 420),
    ("truncated", "ingestion_assets_tests.drills.truncated", 2, 300),
    ("ml-outage", "ingestion_assets_tests.drills.ml_outage", 3, 1200),
    ("will-not-heal", "ingestion_assets_tests.drills.will_not_heal", 2, 300),
]
