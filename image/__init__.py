"""tokenzoo image families."""
