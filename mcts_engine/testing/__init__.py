"""Test and benchmark helpers that ship with the package (no network, no model).

``stub_server``: a stand-in OpenAI-compatible chat-completions server with a set decoding capacity,
per-choice latency and scripted grounded replies (``prompt_view`` reads the request); ``faults``: its fault
plan (5xx, 429, hangs, resets, malformed replies, protocol oddities) at seeded rates or for the first K requests.
"""
