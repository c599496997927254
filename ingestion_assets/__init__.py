"""The courier: supplier price lists fetched byte for byte and handed to ml-analyze."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Dagster warns at every use of a beta or preview API (Output's data_version, pools, ...), in
# every run: nothing its users can act on, and it buries what they can in the logs.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

# Every process that loads the code location (run workers above all) waits for pool slots
# asleep, not spinning: see pool_wait.py.
from . import pool_wait  # noqa: E402

pool_wait.apply()
