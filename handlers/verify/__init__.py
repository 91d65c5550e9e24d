"""Verification codes: login codes sent by SMS, checked once, with lock-out and caps."""
