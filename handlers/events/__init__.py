"""The event log and its consumers: call events written off the signalling path
(`writer.py`), the log followed by every instance (`hub.py`) and served as server-sent events
(`routes.py`, `GET /v1/events`). The same rows feed the signed webhooks (migration 0013)."""
