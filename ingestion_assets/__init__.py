"""The courier: supplier price lists fetched byte for byte and handed to ml-analyze."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Dagster warns at every use of a beta or preview API (Output's data_version, pools, ...), in
# every run: nothing its users can act on, and it buries what they can in the logs.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
