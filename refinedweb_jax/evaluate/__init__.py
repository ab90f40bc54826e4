"""Evaluation: the evaluator, metrics and the sandbox that runs generated code."""
