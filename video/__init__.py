"""tokenzoo video families."""
