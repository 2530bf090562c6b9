"""How large a forward pass is by default, by device: the rows and padded tokens of one batch (plain
constants, which the command-line parsers show in their help)."""

from __future__ import annotations

# Rows (texts, or questions' options) in one batch when the caller does not say. The token budget below
# is what should bound a batch. On a GPU a cap of 8 rows bound every batch of typical questions
# (8 x ~150 tokens) far below the 16,384-token budget: on an H100, 62 questions took 8 forward passes per
# view, each too small to keep the device busy. 64 rows of up to 256 tokens fill that budget. On a CPU
# larger batches gain no speed (64 rows under the 1,024-token budget measured 6% slower than 8).
DEFAULT_BATCH_ROWS = {"cpu": 8, "cuda": 64}

# Tokens (rows x padded length) in one batch when the caller does not say. Activation memory grows
# with it (about 40 kB per token for a 50M-parameter Llama); on a CPU larger batches gain no speed,
# since a 1k-row matmul already runs at the core's peak, so they only cost memory.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}

__all__ = ["DEFAULT_BATCH_ROWS", "DEFAULT_BATCH_TOKENS"]
