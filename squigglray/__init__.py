"""squigglray: a Ray-native platform for math-reasoning LLM research.

Start here: `squigglray quickstart --smoke` trains the nano model on the synthetic problem
families on a local Ray and prints per-family held-out accuracy.
"""

__version__ = "0.1.0"
