"""Tests of the platform edges: signature schemes, body adapters and the platform API client."""
