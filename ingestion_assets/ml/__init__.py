"""The ML hand-off: the ml-analyze client, the submission asset, the status sensor."""
