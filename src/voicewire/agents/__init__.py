"""The model side: the Agent API and the built-in agents (DESIGN §7)."""
