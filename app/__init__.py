"""routegraph application layer: settings, model pool, local servers, service, CLI."""
