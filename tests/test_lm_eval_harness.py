"""With lm-evaluation-harness itself (the `lm-eval` extra: skipped when `lm_eval` is not installed, except
under CI (CI=true), which installs it, where a missing lm-eval fails).

lm-eval scores a tiny model on a task built from a QA file and writes its `--log_samples` file the way
its CLI does; specprobe reads it back and must agree with lm-eval's own accuracy and with specprobe's
own evaluation of the same model. specprobe's results.json must render with lm-eval's table printer.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pandas as pd
import pytest

if os.environ.get("CI") == "true":
    import lm_eval  # CI installs the lm-eval extra: a missing lm-eval is a failure there
else:
    lm_eval = pytest.importorskip("lm_eval")

from specprobe.finetune.evaluation import evaluate  # noqa: E402
from specprobe.finetune.lm_eval import from_lm_eval  # noqa: E402

OPTS = ("aspirin", "heparin", "insulin", "rest")
TASK = "specprobe_qa"
# the task as a user would write it for an S-MedQA JSON file, with specprobe's default prompt format
TASK_YAML = """
task: specprobe_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {qa}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{Question}}}}\\n{{% for o in Options %}}{{{{ 'ABCD'[loop.index0] }}}}. {{{{o}}}}\\n{{% endfor %}}Answer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{Options.index(Answer)}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.mark.slow
def test_lm_eval_samples_read_back_agree_with_lm_eval_and_specprobe(tiny_llama, tmp_path, monkeypatch):
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    base = str(tiny_llama[0])
    rng = random.Random(0)
    items = [
        {
            "Question": f"Patient {i} has pain number {i * 7}. Which drug is best?",
            "Options": list(OPTS),
            "Answer": OPTS[rng.randrange(4)],
            "Specialty": ("Cardiology", "Neurology", "Dermatology")[i % 3],
        }
        for i in range(12)
    ]
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps(items))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "task.yaml").write_text(TASK_YAML.format(qa=qa))
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={base},dtype=float32",
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        log_samples=True,
        batch_size=4,
        device="cpu",
    )
    assert res is not None
    tracker = EvaluationTracker(output_path=str(tmp_path / "out"))  # as `lm_eval --log_samples` saves them
    tracker.save_results_aggregated(results=res, samples=res["samples"])
    tracker.save_results_samples(task_name=TASK, samples=res["samples"][TASK])
    (samples,) = (tmp_path / "out").rglob(f"samples_{TASK}_*.jsonl")

    back = from_lm_eval(samples, qa)
    # lm-eval's --output_path itself: the one samples file in it, the model named by its folder, as for the file
    pd.testing.assert_frame_equal(from_lm_eval(tmp_path / "out", qa).accuracy(), back.accuracy())
    overall = back.accuracy().set_index("specialty").loc["ALL"]
    assert overall["acc"] == pytest.approx(res["results"][TASK]["acc,none"])
    assert overall["acc_norm"] == pytest.approx(res["results"][TASK]["acc_norm,none"])

    own = evaluate(base, qa, progress=False)
    theirs, ours = back.to_pandas(), own.to_pandas()
    np.testing.assert_allclose(np.array(list(theirs["option_logp"])), np.array(list(ours["option_logp"])), atol=1e-4)
    cols = ["specialty", "n", "n_correct", "acc", "acc_lo", "acc_hi"]
    assert back.accuracy()[cols].equals(own.accuracy()[cols])

    payload = json.loads(own.to_lm_eval(tmp_path / "results.json").read_text())
    table = make_table(payload)
    assert "specprobe_mc" in table and "acc" in table
    assert payload["results"]["specprobe_mc"]["acc,none"] == pytest.approx(res["results"][TASK]["acc,none"])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_option_loglikelihoods_equal_lm_evals_with_one_bos(tiny_dir, arch):
    """lm-eval's HFLM on the same strings gives specprobe's log-likelihoods once it conditions on the
    BOS as specprobe does: by default for Llama (its tokenizer adds BOS), with `add_bos_token=True`
    for GPT-2 (a BOS the tokenizer does not add; lm-eval's default leaves it out)."""
    from conftest import _build
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from specprobe.finetune.prompts import PromptFormat
    from specprobe.terms.datasets import QARecord

    base = str(_build(tiny_dir, arch)[0])
    recs = [QARecord(f"q{i}", f"Patient {i} has pain. Which drug?", OPTS[: 2 + i % 3], OPTS[0]) for i in range(4)]
    ours = evaluate(base, recs, continuation="text", progress=False).to_pandas()
    fmt = PromptFormat(continuation="text")
    reqs = [
        Instance("loglikelihood", {}, (fmt.prompt(r), c), j) for r in recs for j, c in enumerate(fmt.continuations(r))
    ]
    kw = {"add_bos_token": True} if arch == "gpt2" else {}
    lm = HFLM(pretrained=base, dtype="float32", device="cpu", batch_size=4, **kw)
    theirs = [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
    np.testing.assert_allclose(np.concatenate([np.array(t) for t in ours["option_logp"]]), theirs, atol=1e-4)
