"""How large a forward pass is by default, by device (torch-free, so that the command-line parsers can
show the defaults without importing torch)."""

from __future__ import annotations

# Rows (texts, or questions' options) in one batch by default. The token budget below is what bounds a
# batch; this cap only keeps short items from piling up. A cap of 8 would bind every GPU batch of
# typical questions (8 x ~150 tokens) far below the 16,384-token budget: 8x the forward passes, each too
# small to keep the device busy. 64 rows of up to 256 tokens fill the GPU budget; on a CPU the
# 1,024-token budget binds first for items longer than 16 tokens.
DEFAULT_BATCH_ROWS = 64

# Tokens (rows x padded length) in one batch when the caller does not say. Activation memory grows
# with it (about 40 kB per token for a 50M-parameter Llama); on a CPU larger batches gain no speed,
# since a 1k-row matmul already runs at the core's peak, so they only cost memory.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}

__all__ = ["DEFAULT_BATCH_ROWS", "DEFAULT_BATCH_TOKENS"]
