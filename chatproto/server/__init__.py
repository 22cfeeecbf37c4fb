"""The chat server: protocol adapter, login, routing, presence and the twistd tap."""
