#!/usr/bin/env python
"""Build specprobe's built-in demo base model from WordNet text.

Reproducible recipe for ``specprobe/data/demo/model/``:

1. Text: the glosses (definitions) and example sentences of Debian's
   ``wordnet-base`` package (WordNet 3.0, WordNet licence; see
   ``specprobe/data/demo/WORDNET_LICENSE``).  Synsets whose lemmas/gloss match a
   list of clinical keywords are *removed* from training (they are used only as a
   held-out "medical" evaluation set), so that the base model knows general
   English but little medicine.
2. Tokenizer: byte-level BPE trained with ``tokenizers`` on the training text,
   Llama-style special tokens (``<pad>``=0, ``<s>``=1, ``</s>``=2), BOS added by
   the post-processor, offsets trimmed so a token's offsets exclude its leading
   space.  Saved as a ``PreTrainedTokenizerFast``.
3. Model: a small ``LlamaForCausalLM`` trained from scratch (fixed seed,
   deterministic CPU algorithms, AdamW, warmup + cosine schedule) on packed
   sequences, saved as safetensors.
4. Evaluation (held-out general glosses, held-out medical glosses, and the demo
   questions if present) and a model card ``README.md``.

Usage (the exact command used for the committed model is in the model card)::

    python scripts/build_demo_model.py --out specprobe/data/demo/model

``--wordnet-dir`` may point to an extracted ``usr/share/wordnet`` directory; if
omitted, the script runs ``apt-get download wordnet-base`` and ``dpkg -x`` in a
temporary directory under /tmp.  ``--eval-only`` re-evaluates an existing model
and rewrites the model card metrics.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "specprobe" / "data" / "demo" / "model"
DEFAULT_QUESTIONS = REPO / "specprobe" / "data" / "demo" / "questions.json"

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# Synsets whose lemmas or gloss match any of these (lower-cased, word-start
# anchored) stems are treated as medical: excluded from training, used as the
# held-out medical evaluation set.  Deliberately broad.
MEDICAL_STEMS = [
    "medic",
    "medicine",
    "disease",
    "disorder",
    "syndrome",
    "symptom",
    "infect",
    "inflam",
    "patholog",
    "pathogen",
    "drug",
    "pharma",
    "patient",
    "therap",
    "treatment",
    "diagnos",
    "clinic",
    "surg",
    "physician",
    "doctor",
    "nurs",
    "hospital",
    "tumor",
    "tumour",
    "cancer",
    "carcinom",
    "malignan",
    "sarcoma",
    "lymphom",
    "leukemi",
    "leukaemi",
    "anemi",
    "anaemi",
    "antibiot",
    "antibod",
    "vaccin",
    "virus",
    "viral",
    "bacteri",
    "fever",
    "pain",
    "ache",
    "blood",
    "heart",
    "cardi",
    "coronar",
    "arter",
    "vein",
    "venous",
    "lung",
    "pulmon",
    "respirat",
    "asthma",
    "bronch",
    "pneumon",
    "renal",
    "kidney",
    "urin",
    "liver",
    "hepat",
    "gastr",
    "intestin",
    "bowel",
    "colon",
    "neur",
    "brain",
    "nerve",
    "spinal",
    "psych",
    "schizo",
    "depress",
    "anxiety",
    "gland",
    "hormon",
    "insulin",
    "diabet",
    "thyroid",
    "pregnan",
    "obstetr",
    "gyn",
    "uter",
    "ovar",
    "fetus",
    "fetal",
    "foetus",
    "menstru",
    "birth",
    "tissue",
    "muscle",
    "bone",
    "skelet",
    "joint",
    "arthr",
    "skin",
    "derma",
    "rash",
    "lesion",
    "ulcer",
    "lymph",
    "immun",
    "allerg",
    "toxin",
    "poison",
    "dose",
    "dosage",
    "anatom",
    "physiolog",
    "organ of",
    "organs",
    "body",
    "bodily",
    "abdom",
    "chest",
    "stomach",
    "wound",
    "injur",
    "fractur",
    "epilep",
    "seizure",
    "stroke",
    "paralys",
    "dementia",
    "cell",
    "cyst",
    "carcin",
    "steroid",
    "antigen",
    "enzyme",
    "protein",
    "chromosom",
    "genetic",
    "congenital",
    "mental",
    "sick",
    "ill ",
    "illness",
    "ailment",
    "cure",
    "remedy",
    "vomit",
    "nause",
    "diarrh",
    "cough",
    "breath",
    "pulse",
    "hypert",
    "hypot",
    "cholest",
    "glucose",
    "sedat",
    "analges",
    "anesthe",
    "anaesthe",
    "narcotic",
    "opiat",
    "opioid",
    "addict",
    "alcohol",
]
_MED_RE = re.compile(r"\b(" + "|".join(re.escape(s) for s in MEDICAL_STEMS) + r")")
_ITIS_RE = re.compile(r"[a-z]{3,}(itis|emia|aemia|osis|ectomy|otomy|oma|algia|pathy)\b")


def is_medical(text: str) -> bool:
    t = text.lower()
    return bool(_MED_RE.search(t) or _ITIS_RE.search(t))


# --------------------------------------------------------------------------- data


def fetch_wordnet(workdir: Path) -> Path:
    """apt-get download wordnet-base into workdir and extract it; return dict dir."""
    workdir.mkdir(parents=True, exist_ok=True)
    debs = sorted(workdir.glob("wordnet-base_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", "wordnet-base"], cwd=workdir, check=True)
        debs = sorted(workdir.glob("wordnet-base_*.deb"))
    root = workdir / "extract"
    if not (root / "usr/share/wordnet/data.noun").exists():
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
    return root / "usr/share/wordnet"


def parse_wordnet(dict_dir: Path) -> list[dict]:
    """Parse data.{noun,verb,adj,adv} into synset records (sorted, deterministic)."""
    records = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(dict_dir / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, gloss = line.split("|", 1)
                fields = head.split()
                offset, lexfile = fields[0], int(fields[1])
                n_words = int(fields[3], 16)
                lemmas = [fields[4 + 2 * i] for i in range(n_words)]
                lemmas = [re.sub(r"\(.*?\)$", "", w).replace("_", " ") for w in lemmas]
                gloss = gloss.strip()
                examples = [e.strip() for e in re.findall(r'"([^"]+)"', gloss)]
                definition = re.sub(r'"[^"]*"', "", gloss)
                definition = re.sub(r"(;\s*)+", "; ", definition).strip(" ;")
                records.append(
                    dict(id=f"{pos}.{offset}", lexfile=lexfile, lemmas=lemmas, definition=definition, examples=examples)
                )
    return records


def _sentence(s: str) -> str:
    s = s.strip()
    if not s:
        return s
    s = s[0].upper() + s[1:]
    if s[-1] not in ".!?":
        s += "."
    return s


def record_to_text(r: dict) -> str:
    """One training document per synset: 'Lemma: definition. Example. Example.'"""
    parts = []
    if r["definition"]:
        parts.append(f"{r['lemmas'][0]}: {r['definition']}.".replace("..", "."))
    parts.extend(_sentence(e) for e in r["examples"])
    return " ".join(p for p in parts if p)


def build_corpus(dict_dir: Path, seed: int, heldout_frac: float):
    records = parse_wordnet(dict_dir)
    general, medical = [], []
    for r in records:
        text = record_to_text(r)
        if not text:
            continue
        key = " ".join(r["lemmas"]) + " " + r["definition"] + " " + " ".join(r["examples"])
        (medical if is_medical(key) else general).append(text)
    rng = random.Random(seed)
    rng.shuffle(general)
    rng.shuffle(medical)
    n_held = int(len(general) * heldout_frac)
    return dict(
        train=general[n_held:],
        heldout=general[:n_held],
        medical=medical,
        n_synsets=len(records),
        words_all=sum(len((r["definition"] + " " + " ".join(r["examples"])).split()) for r in records),
    )


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer, out: Path) -> None:
    """save_pretrained, with the class name that transformers 4.x and 5.x both load."""
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    for k in ("backend", "is_local", "local_files_only"):
        cfg.pop(k, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def check_offsets(tokenizer, texts: list[str]) -> None:
    """Every non-special, non-whitespace token's offsets cover exactly its text minus the leading space."""
    for text in texts:
        enc = tokenizer(text, return_offsets_mapping=True)
        ids = enc["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1, ids
        for tid, (s, e) in zip(ids[1:], enc["offset_mapping"][1:]):
            piece = tokenizer.decode([tid])
            if not piece.strip():
                continue  # whitespace-only token: trimmed to an empty span
            assert text[s:e] == piece.lstrip(" ") and e > s, (text, piece, text[s:e])


# -------------------------------------------------------------------------- model


def pack(tokenizer, texts: list[str], seq_len: int):
    import torch

    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len), len(ids)


def make_config(vocab_size: int, args):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        initializer_range=0.02,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attention_dropout=0.0,
        use_cache=True,
    )


def eval_loss(model, tokenizer, texts: list[str], batch_size: int = 32) -> dict:
    """Token-weighted mean next-token loss over documents (BOS-prefixed, each scored alone)."""
    import torch

    model.eval()
    tot, n_tok = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=512
            )
            logits = model(**enc).logits[:, :-1].float()
            labels = enc["input_ids"][:, 1:].clone()
            labels[enc["attention_mask"][:, 1:] == 0] = -100
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            tot += loss.item()
            n_tok += int((labels != -100).sum())
    mean = tot / max(n_tok, 1)
    return dict(loss=round(mean, 4), ppl=round(math.exp(mean), 2), tokens=n_tok, docs=len(texts))


def question_texts(path: Path) -> list[str]:
    if not path.exists():
        return []
    qs = json.loads(path.read_text())
    return [q["Question"] + " Answer: " + q["Answer"] for q in qs]


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def evaluate(out: Path, corpus: dict, questions: Path, n_eval: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    tok.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    metrics = {
        "heldout_wordnet_general": eval_loss(model, tok, corpus["heldout"][:n_eval]),
        "heldout_wordnet_medical": eval_loss(model, tok, corpus["medical"][:n_eval]),
    }
    qt = question_texts(questions)
    if qt:
        metrics["demo_questions"] = eval_loss(model, tok, qt, batch_size=16)
    return metrics


# -------------------------------------------------------------------------- train


def train(args, corpus, tokenizer, out: Path) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.use_deterministic_algorithms(True)

    data, n_train_tokens = pack(tokenizer, corpus["train"], args.seq_len)
    print(f"train tokens {n_train_tokens}, sequences {len(data)} x {args.seq_len}", flush=True)
    model = LlamaForCausalLM(make_config(len(tokenizer), args))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))

    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(data), generator=gen)
    pos = 0
    log = []
    t0 = time.time()
    model.train()
    ema = None
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order = torch.randperm(len(data), generator=gen)
            pos = 0
        batch = data[order[pos : pos + args.batch]]
        pos += args.batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        li = loss.item()
        ema = li if ema is None else 0.95 * ema + 0.05 * li
        if step % 20 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step:4d} loss {li:.4f} ema {ema:.4f} lr {lr_at(step):.2e} {el:.0f}s", flush=True)
            log.append(dict(step=step, loss=round(li, 4), ema=round(ema, 4), seconds=round(el, 1)))
    train_seconds = time.time() - t0
    model.eval()
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return dict(
        params=n_params,
        train_tokens_available=n_train_tokens,
        tokens_seen=args.steps * args.batch * args.seq_len,
        epochs=round(args.steps * args.batch / len(data), 3),
        final_train_loss=round(li, 4),
        final_train_loss_ema=round(ema, 4),
        train_seconds=round(train_seconds, 1),
        log=log,
    )


# --------------------------------------------------------------------------- card


CARD = """\
# specprobe demo base model (`specprobe/data/demo/model`)

A tiny general-English causal language model (Llama architecture, {params_m:.2f} M
parameters) trained **from scratch** by the specprobe project, used as the built-in
base model of the offline `specprobe demo`. It knows general English (WordNet glosses)
but has seen (almost) no medicine, so that LoRA fine-tuning on the demo's clinical
questions has something to show. It is **not** a useful language model for anything else.

## Data

* Debian package `wordnet-base` ({deb}), i.e. Princeton WordNet 3.0 (WordNet licence,
  see `../WORDNET_LICENSE`). From `dict/data.{{noun,verb,adj,adv}}` we take the gloss
  (text after `|`): its definition and its quoted example sentences. Each synset becomes one
  document `"<First lemma>: <definition>. <Example 1>. <Example 2>."`
  ({n_synsets} synsets, {words_all} gloss words).
* Synsets whose lemmas/gloss match a broad list of clinical keyword stems
  (`MEDICAL_STEMS` and a suffix regex `-itis/-emia/-osis/-oma/-ectomy/...` in the script)
  are **excluded from training** ({n_med} documents); they form the held-out *medical* set.
* The remaining {n_gen} general documents are shuffled (seed {seed}); {n_held} are held out
  for evaluation, {n_train} are used for training ({train_tokens} tokens incl. BOS/EOS).

## Tokenizer

Byte-level BPE trained with `tokenizers` {tok_version} on the training documents only,
vocab size {vocab} (`<pad>`=0, `<s>`=1, `</s>`=2, 256 byte symbols, merges). Pre-tokenizer
`ByteLevel(add_prefix_space=False)` with the GPT-2 regex; post-processor
`Sequence[ByteLevel(trim_offsets=True), TemplateProcessing("<s> $A")]`, so exactly one BOS
is added and `return_offsets_mapping=True` offsets exclude the leading space of a token.
Saved as a `PreTrainedTokenizerFast` (`tokenizer.json`, `tokenizer_config.json`).

## Model and training

`LlamaConfig(hidden_size={hidden}, intermediate_size={intermediate}, num_hidden_layers={layers},
num_attention_heads={heads}, num_key_value_heads={heads}, max_position_embeddings=512,
tie_word_embeddings=True, vocab_size={vocab})`, {params} parameters, stored in float32
safetensors ({model_mb:.2f} MB; whole directory {dir_mb:.2f} MB).

* Causal-LM loss on packed sequences of {seq_len} tokens (documents = `<s> text </s>`,
  concatenated), batch {batch} sequences, {steps} steps ({tokens_seen} tokens, {epochs} epochs).
* AdamW (betas 0.9/0.95, weight decay {wd} on matrices), peak LR {lr}, {warmup} warmup steps,
  cosine decay to 10 %, grad-norm clip 1.0; seed {seed}; `torch.use_deterministic_algorithms(True)`;
  `torch.set_num_threads({threads})`.
* Final training loss {final_loss} (EMA {final_ema}); training wall time {train_min:.1f} min
  (total script {total_min:.1f} min) on {cpu}, torch {torch_version}, transformers {tf_version}.
  The machine was shared: other jobs competed for its 2 cores during the build, so an idle
  machine is faster. (One thread is the default because, on an oversubscribed machine, two
  OpenMP threads were about 3x slower per step than one.)

## Evaluation (mean next-token loss, BOS-prefixed documents scored separately)

| text | docs | tokens | loss | perplexity |
|---|---:|---:|---:|---:|
{eval_rows}

`demo_questions` = the demo's own clinical vignettes (`../questions.json`, question + answer).

## Reproduce

```
{command}
```

Without `--wordnet-dir` the script runs `apt-get download wordnet-base` and `dpkg -x` in
`/tmp/specprobe-wordnet` (reused if present). `--eval-only` re-evaluates the saved model and
rewrites this card.

Determinism: the tokenizer is deterministic (`tokenizer.json` sha256 identical across builds).
Training uses a fixed seed, a seeded data order, no dropout and
`torch.use_deterministic_algorithms(True)`. Checked with short builds (`--steps 20`): two
builds with the same arguments on the same machine gave bit-identical `model.safetensors`;
with `--threads 2` instead of 1 the weights differed in the last bits (floating-point
reduction order) while the training losses agreed to 4 decimals. Other CPUs, BLAS builds or
library versions may likewise change the last bits of the weights, not the behaviour.
sha256 of the committed files: `model.safetensors` {sha_model}, `tokenizer.json` {sha_tok}.

Note that the model is small and saw only about half an epoch, so it is a weak language
model; text in its training style (`"Lemma: definition. Example."`) gets a much lower loss
than bare lower-case fragments.

## Licence

The weights and tokenizer are derived from WordNet 3.0 text; redistribution keeps the
WordNet licence notice (`../WORDNET_LICENSE`). The training script is part of specprobe (MIT).
"""


def write_card(out: Path, info: dict) -> None:
    rows = "\n".join(
        f"| {k} | {v['docs']} | {v['tokens']} | {v['loss']} | {v['ppl']} |" for k, v in info["eval"].items()
    )
    a = info["args"]
    model_mb = (out / "model.safetensors").stat().st_size / 1e6
    dir_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
    text = CARD.format(
        params_m=info["train"]["params"] / 1e6,
        params=info["train"]["params"],
        deb=info["deb"],
        n_synsets=info["n_synsets"],
        words_all=info["words_all"],
        n_med=info["n_medical"],
        n_gen=info["n_general"],
        n_held=info["n_heldout"],
        n_train=info["n_train"],
        train_tokens=info["train"]["train_tokens_available"],
        seed=a["seed"],
        tok_version=info["versions"]["tokenizers"],
        vocab=info["vocab_size"],
        hidden=a["hidden"],
        intermediate=a["intermediate"],
        layers=a["layers"],
        heads=a["heads"],
        model_mb=model_mb,
        dir_mb=dir_mb,
        seq_len=a["seq_len"],
        batch=a["batch"],
        steps=a["steps"],
        tokens_seen=info["train"]["tokens_seen"],
        epochs=info["train"]["epochs"],
        wd=a["weight_decay"],
        lr=a["lr"],
        warmup=a["warmup"],
        threads=a["threads"],
        final_loss=info["train"]["final_train_loss"],
        final_ema=info["train"]["final_train_loss_ema"],
        train_min=info["train"]["train_seconds"] / 60,
        total_min=info["total_seconds"] / 60,
        cpu=info["cpu"],
        torch_version=info["versions"]["torch"],
        tf_version=info["versions"]["transformers"],
        eval_rows=rows,
        command=info["command"],
        sha_model=info.get("sha256", {}).get("model.safetensors", "?"),
        sha_tok=info.get("sha256", {}).get("tokenizer.json", "?"),
    )
    (out / "README.md").write_text(text)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--wordnet-dir",
        type=Path,
        default=None,
        help="extracted usr/share/wordnet dir (default: apt-get download into /tmp)",
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "specprobe-wordnet")
    ap.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=320)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--heldout-frac", type=float, default=0.02)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-only", action="store_true", help="re-evaluate the model in --out and rewrite its card")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import tokenizers
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    t_start = time.time()
    dict_dir = args.wordnet_dir or fetch_wordnet(args.workdir)
    debs = sorted(glob.glob(str(args.workdir / "wordnet-base_*.deb")))
    corpus = build_corpus(Path(dict_dir), args.seed, args.heldout_frac)
    print(
        f"synsets {corpus['n_synsets']}, general train {len(corpus['train'])}, heldout "
        f"{len(corpus['heldout'])}, medical {len(corpus['medical'])}",
        flush=True,
    )
    out: Path = args.out
    info_path = out / "build_info.json"

    if args.eval_only:
        info = json.loads(info_path.read_text())
        info["eval"] = evaluate(out, corpus, args.questions, args.n_eval)
        info_path.write_text(json.dumps(info, indent=1) + "\n")
        write_card(out, info)
        print(json.dumps(info["eval"], indent=1))
        return 0

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus["train"], args.vocab_size)
    check_offsets(
        tokenizer,
        [
            "The patient has acute myocardial infarction and was given aspirin.",
            "A 54-year-old man presents with hematuria; creatinine is 2.3 mg/dL.",
            "  Two  spaces, tabs\tand 'quotes' (parentheses) work!",
            "the act of going from one place to another",
        ],
    )
    train_info = train(args, corpus, tokenizer, out)
    info = dict(
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        command=" ".join(
            ["python", "scripts/build_demo_model.py"]
            + [shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv)]
        ),
        deb=os.path.basename(debs[-1]) if debs else str(dict_dir),
        n_synsets=corpus["n_synsets"],
        words_all=corpus["words_all"],
        n_general=len(corpus["train"]) + len(corpus["heldout"]),
        n_train=len(corpus["train"]),
        n_heldout=len(corpus["heldout"]),
        n_medical=len(corpus["medical"]),
        vocab_size=len(tokenizer),
        train=train_info,
        cpu=cpu_name(),
        versions=dict(
            torch=torch.__version__, transformers=transformers.__version__, tokenizers=tokenizers.__version__
        ),
    )
    info["eval"] = evaluate(out, corpus, args.questions, args.n_eval)
    info["total_seconds"] = round(time.time() - t_start, 1)
    info["sha256"] = {
        p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.name in ("model.safetensors", "tokenizer.json")
    }
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    write_card(out, info)
    print(json.dumps(info["eval"], indent=1))
    print(json.dumps(info["sha256"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
