"""The node: the agent that wires every part together (the only module that
knows them all), its event bus and its metrics."""
