#!/usr/bin/env python
"""Build specprobe's general-English text set (``specprobe/data/general/wordnet_heldout.jsonl``).

The texts are WordNet 3.0 glosses and example sentences ("Lemma: definition. Example."), made
exactly as ``scripts/build_demo_model.py`` makes its training documents, from the *held-out general*
split of that script (seed 0, held-out fraction 0.02): general English of the same source and style
as the demo model's training text, with no medical-looking synset (the script's keyword filter) and
not trained on. The first ``--n`` of them are written, one JSON object per line: {"id", "text"}.

Usage (downloads Debian's ``wordnet-base`` with ``apt-get download`` unless ``--wordnet-dir`` is given)::

    python scripts/build_general_text.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_demo_model import build_corpus, fetch_wordnet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "specprobe" / "data" / "general" / "wordnet_heldout.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet-dir", default=None, help="an extracted usr/share/wordnet directory")
    ap.add_argument("--workdir", default="/tmp/specprobe-wordnet")
    ap.add_argument("--n", type=int, default=400, help="how many held-out texts to write")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    dict_dir = Path(args.wordnet_dir) if args.wordnet_dir else fetch_wordnet(Path(args.workdir))
    corpus = build_corpus(dict_dir, seed=0, heldout_frac=0.02)  # the demo model's split
    texts = corpus["heldout"][: args.n]
    lines = [json.dumps({"id": f"wn-heldout-{i:04d}", "text": t}, ensure_ascii=False) for i, t in enumerate(texts)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(texts)} of {len(corpus['heldout'])} held-out general texts to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
