"""Programs that run next to the workloads mailward renders (not the operator itself)."""
