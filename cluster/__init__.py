"""Driver side: config, CLI, controller loop, weight sync, metrics, reports."""
