"""Evals: backdoor rate, persistence curves, reports."""
