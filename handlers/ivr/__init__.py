"""Interactive voice response: prompts, business hours, the callback list and the flows
that drive calls answered by the gateway itself (callback capture, abuse block)."""
