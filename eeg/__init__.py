"""tokenzoo eeg families."""
