"""tokenzoo audio families."""
