"""Sender-number registry and opt-out list: rules, storage, in-memory index and routes."""
