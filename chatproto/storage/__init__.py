"""Persistent storage: database engines, migrations and the chat store."""
