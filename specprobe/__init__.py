"""specprobe: what did clinical-specialty fine-tuning put into a language model?"""

__version__ = "0.1.0"
