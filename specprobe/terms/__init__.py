"""Clinical term extraction and specialty term lexicons (depends on no other specprobe package)."""

from specprobe.terms.datasets import QARecord, TextRecord, default_data_path, load_qa
from specprobe.terms.lexicon import Lexicon

__all__ = ["QARecord", "TextRecord", "load_qa", "default_data_path", "Lexicon"]
