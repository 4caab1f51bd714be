"""Serving concerns shared by every tradeserve BentoML service, written once."""
