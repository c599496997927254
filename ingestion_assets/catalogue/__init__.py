"""The catalogue database ml-analyze writes into: its suppliers kept in step with the master
sheet, its items counted after an analysis, its log rows shown when a job fails."""
