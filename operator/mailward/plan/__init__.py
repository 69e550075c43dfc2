"""Pure planners: what exists and what is wanted in, the changes to make out."""
