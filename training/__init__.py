"""Training the router from stored traces: rewards, datasets, TRL entry points."""
