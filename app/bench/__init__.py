"""Routing benchmarks on recorded outcomes: routers under one interface, a leaderboard, curves."""
