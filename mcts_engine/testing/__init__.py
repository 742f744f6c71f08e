"""Test and benchmark helpers that ship with the package (no network, no model).

``stub_server``: a stand-in OpenAI-compatible chat-completions server with a set decoding capacity,
per-choice latency and scripted grounded replies (``prompt_view`` reads the request); ``faults``: its fault
plan (5xx, 429, hangs, resets, malformed replies, protocol oddities) at seeded rates or for the first K requests;
``truth_model``: the search-yield benchmark's grounded stand-in teacher; ``refused_port``: a port that refuses
connections for as long as a test needs it. ``synthetic_runs``: hand-built trees and run directories (export, report
tests and benchmarks); ``tiny_model``: a ~0.2 M-parameter Qwen2.5-VL built locally, and small export parquets
(trainer tests and ``scripts/bench_train.py``). The last two import PIL (and torch/transformers for the tiny
model) — only tests and benchmarks import them.
"""
