"""Running jobs: execution on a worker, recovery of lost ones, planning, recalibration, experiments."""
