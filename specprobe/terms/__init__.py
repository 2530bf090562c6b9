"""Clinical term extraction and specialty term lexicons (depends on no other specprobe package)."""

from specprobe.terms.datasets import QARecord, TextRecord, load_qa, default_data_path

__all__ = ["QARecord", "TextRecord", "load_qa", "default_data_path"]
