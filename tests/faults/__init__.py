"""Fault injection: the whole pipeline under crashes, broker restarts and a misbehaving LMS, checked by a ledger."""
