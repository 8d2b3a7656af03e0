"""PAO contracts: events, commands, topics, error codes and REST models."""
