"""HTML reports without a browser: one self-contained file, escaping, registry dispatch, sections."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specprobe.core.results import Result
from specprobe.probe import Comparison
from specprobe.reports import (
    build_page,
    experiment_page,
    generic_page,
    register,
    registered_kinds,
    render,
    renderer_for,
)
from specprobe.reports import sections as S

render_module = importlib.import_module("specprobe.reports.render")  # the package's `render` is the function

XSS = "<script>alert('xss')</script>"
XSS_IMG = '<img src=x onerror="alert(1)">'


def make_comparison(xss: bool = True, n_texts: int = 12, seed: int = 0) -> Comparison:
    """A synthetic Comparison (no model) with dataset text that tries to inject HTML."""
    rng = np.random.default_rng(seed)
    terms = {
        "seizure": ("Neurology",),
        "chest pain": ("Cardiology", "Emergency medicine"),
        "cirrhosis": ("Gastroenterology",),
    }
    if xss:
        terms[XSS] = (XSS_IMG,)
    controls = ["budget", "month", "words & <b>bold</b>" if xss else "words"]
    rows = []
    for t in range(n_texts):
        for term, specs in list(terms.items()) + [(c, ()) for c in controls]:
            n_tok = int(rng.integers(1, 4))
            base = -rng.uniform(5, 30)
            delta = rng.normal(0.3 if term == "seizure" else 0.0, 0.2) * n_tok
            rows.append(
                {
                    "text_id": f"text{t}",
                    "term": term,
                    "specialties": specs,
                    "text_specialties": (),
                    "surface": term,
                    "start": 0,
                    "end": len(term),
                    "n_tokens": n_tok,
                    "logp_base": base,
                    "logp_tuned": base + delta,
                    "delta": delta,
                    "delta_per_token": delta / n_tok,
                    "token_logp_base": [base / n_tok] * n_tok,
                    "token_logp_tuned": [(base + delta) / n_tok] * n_tok,
                    "is_control": not specs,
                    "flags": "",
                }
            )
    meta = {
        "base": f"base-model {XSS}",
        "tuned": "adapter-dir",
        "base_weights_sha256": "ab" * 32,
        "adapter_sha256": "cd" * 32,
        "options": {"template": XSS, "seed": 0},
        "n_texts": n_texts,
        "control_words": controls,
    }
    return Comparison(pd.DataFrame(rows), meta, {"missing": [f"missing {XSS}"]})


def _scripts(html: str) -> list[tuple[str, str]]:
    return re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)


@pytest.fixture(scope="module")
def comparison_html(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("report") / "sub" / "comparison.html"
    out = make_comparison().report(path)
    return out, out.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file(comparison_html):
    path, html = comparison_html
    assert path.exists() and path.suffix == ".html"
    assert [p.name for p in path.parent.iterdir()] == ["comparison.html"], "atomic write leaves no temp file"
    assert 500_000 < len(html.encode()) < 3_000_000, "Vega JS inlined once, data kept small"
    # nothing is loaded from elsewhere: no src/href in the markup, no CSS imports, a strict CSP
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", html, flags=re.S)
    assert not re.search(r"""<(script|img|link|iframe|object|embed)[^>]*\s(src|href|data)\s*=""", markup, flags=re.I)
    assert not re.search(r"@import|url\(", markup)
    assert "connect-src 'none'" in html and "default-src 'none'" in html
    scripts = _scripts(html)
    code = [body for attrs, body in scripts if "application/json" not in attrs]
    assert sum("vegaEmbed" in body and len(body) > 500_000 for body in code) == 1, "the bundle is inlined exactly once"
    assert html.count("vega-embed") >= 1


def test_dataset_text_is_escaped(comparison_html):
    _, html = comparison_html
    # the only <script> elements are ours: the bundle, the page code and JSON specs
    assert "alert('xss')</script>" not in html
    assert "<img src=x" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in html  # shown as text in tables/lists/metadata
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    for attrs, body in _scripts(html):
        if "application/json" in attrs:
            assert "<" not in body and ">" not in body
            spec = json.loads(body)  # \u003c escapes decode back to the original text
            assert spec.get("$schema", "").startswith("https://vega.github.io/schema/vega-lite/")


def test_specs_carry_the_data(comparison_html):
    _, html = comparison_html
    specs = [json.loads(body) for attrs, body in _scripts(html) if "application/json" in attrs]
    assert len(specs) == 3  # terms vs control, minus control, distributions
    texts = json.dumps(specs)
    assert json.dumps(XSS_IMG) in texts and "Neurology" in texts and "control" in texts
    for spec in specs:
        rows = sum(len(v) for v in spec.get("datasets", {}).values())
        assert 0 < rows < 200, "aggregated data only"


def test_registry_dispatch_and_generic_fallback(tmp_path):
    assert "comparison" in registered_kinds()
    assert renderer_for("comparison") is render_module.comparison_page
    assert renderer_for("no-such-kind") is generic_page

    class Fancy(Result):
        kind = "test_reports_fancy"

    frame = pd.DataFrame({"name": [XSS, "b"], "value": [1.5, np.nan], "vec": [[1, 2, 3], [4]]})
    fancy = Fancy(frame, {"model": "m", "options": {"k": 1}}, {"note": XSS})
    out = fancy.report(tmp_path / "fancy.html")
    html = out.read_text()
    assert "specprobe test_reports_fancy" in html and "&lt;script&gt;" in html and XSS not in html
    assert "vegaEmbed(" in html and "<script>" in html  # page code present
    assert "Vega-Lite" in html

    calls = []

    @register("test_reports_fancy")
    def fancy_page(result, **options):
        calls.append(options)
        return experiment_page([S.table_section(result.to_pandas(), title="Fancy table")], title="Fancy!")

    try:
        out = render(fancy, tmp_path / "fancy2.html", flavour="x")
        assert calls == [{"flavour": "x"}]
        assert "<title>Fancy!</title>" in out.read_text()
    finally:
        render_module._RENDERERS.pop("test_reports_fancy", None)


def test_generic_page_has_no_chart_js(tmp_path):
    class Plain(Result):
        kind = "test_reports_plain"

    out = render(Plain(pd.DataFrame({"a": [1, 2]})), tmp_path / "plain.html")
    html = out.read_text()
    assert len(html) < 100_000, "no charts, no Vega bundle"
    assert "<table" in html


def test_saved_and_loaded_comparison_renders_the_same_sections(tmp_path):
    comp = make_comparison(xss=False)
    comp.save(tmp_path / "c.json.gz")
    loaded = Result.load(tmp_path / "c.json.gz")
    titles = [s.title for s in build_page(loaded).sections]
    assert titles == [s.title for s in build_page(comp).sections]
    assert titles[:4] == ["Overview", "Clinical terms vs control words", "Per-specialty distributions", "Top movers"]


def test_empty_comparison_renders_without_charts(tmp_path):
    comp = make_comparison(xss=False)
    empty = Comparison(comp.to_pandas().iloc[:0], {})
    page = build_page(empty)
    assert page.charts() == []
    html = render(empty, tmp_path / "empty.html").read_text()
    assert "No scored occurrences." in html


def test_comparison_without_controls(tmp_path):
    comp = make_comparison(xss=False)
    df = comp.to_pandas()
    no_ctrl = Comparison(df[~df["is_control"]], comp.metadata)
    page = build_page(no_ctrl)
    html = render(page, tmp_path / "noctrl.html").read_text()
    assert "No control words were scored" in html
    assert len(page.charts()) == 2


def experiment_sections(comps: dict, *, n_layers: int = 6) -> list:
    """Every experiment section, with small synthetic accuracy and layer tables."""
    specs = list(comps)
    acc = pd.DataFrame(
        [
            {"train_specialty": a, "test_specialty": b, "accuracy": 0.6 if a == b else 0.4, "n": 50}
            for a in specs
            for b in specs
        ]
    )
    layers = pd.DataFrame(
        [
            {
                "layer": layer,
                "model": model,
                "group": group,
                "mean_logp": -10 + layer * (1.2 if model == "tuned" else 1.0) - (group == "control"),
                "ci_low": -10.5 + layer,
                "ci_high": -9.5 + layer * 1.3,
            }
            for layer in range(n_layers)
            for model in ("base", "tuned")
            for group in ("Neurology", "Cardiology", "control")
        ]
    )
    return [
        S.accuracy_heatmap_section(acc),
        S.delta_heatmap_section(S.specialty_delta_matrix(comps, n_boot=200)),
        S.terms_vs_control_section(comps, n_boot=200),
        S.distributions_section(comps),
        S.top_movers_section(comps, n_boot=200),
        S.layer_curves_section(layers),
        S.metadata_section(next(iter(comps.values()))),
        S.method_notes_section(),
    ]


def test_experiment_page_from_sections(tmp_path):
    comps = {"Neurology": make_comparison(seed=1), "Cardiology": make_comparison(seed=2)}
    secs = experiment_sections(comps)
    page = experiment_page([secs[:2], None, *secs[2:]], title=f"Experiment {XSS}")
    assert [s.title for s in page.sections][:2] == [
        "Accuracy: fine-tuning specialty × test specialty",
        "Fine-tuning specialty × term specialty",
    ]
    assert len(page.charts()) == 5  # accuracy, delta, terms-minus-control heatmaps, distributions, layers
    out = render(page, tmp_path / "experiment.html")
    html = out.read_text()
    assert "<title>Experiment &lt;script&gt;" in html
    # the heatmap cells carry mean and CI
    heat = json.loads(
        re.search(r'id="fine-tuning-specialty-term-specialty-chart-1-spec">(.*?)</script>', html, re.S).group(1)
    )
    cells = [r for v in heat["datasets"].values() for r in v]
    assert {"finetune_specialty", "term_specialty", "mean", "ci_low", "ci_high", "label"} <= set(cells[0])
    assert len(cells) == 2 * 6  # 2 fine-tunes x (5 term specialties + a control-words column)
    neuro = [c for c in cells if c["finetune_specialty"] == "Neurology" and c["term_specialty"] == "Neurology"][0]
    assert neuro["ci_low"] <= neuro["mean"] <= neuro["ci_high"]


def test_sections_validate_inputs():
    with pytest.raises(KeyError):
        S.method_notes_section(["no-such-topic"])
    assert "No data." in S.delta_heatmap_section(pd.DataFrame()).blocks[0].text
    assert "No data." in S.accuracy_heatmap_section(pd.DataFrame()).blocks[0].text
    assert "No data." in S.layer_curves_section(pd.DataFrame()).blocks[0].text


def test_accuracy_matrix_and_layers_renderers(tmp_path):
    from specprobe.finetune.accuracy_matrix import AccuracyMatrix
    from specprobe.probe.layers import LayerView  # noqa: F401  (registers kind "layers")

    assert {"accuracy_matrix", "layers"} <= set(registered_kinds())
    rows = [
        {
            "model": m,
            "trained_on": t,
            "specialty": s,
            "n": 50,
            "n_correct": 20,
            "acc": 0.4 + 0.2 * (t == s),
            "acc_lo": 0.3,
            "acc_hi": 0.7,
            "n_correct_norm": 20,
            "acc_norm": 0.4,
            "acc_norm_lo": 0.3,
            "acc_norm_hi": 0.5,
        }
        for m, t in (("base", None), ("a1", "Neurology"), ("a2", XSS))
        for s in ("Neurology", XSS)
    ]
    html = render(AccuracyMatrix(pd.DataFrame(rows), {}), tmp_path / "acc.html").read_text()
    spec = json.loads(re.search(r'-chart-1-spec">(.*?)</script>', html, re.S).group(1))
    cells = [r for v in spec["datasets"].values() for r in v]
    assert len(cells) == 6 and {c["fine-tuned on"] for c in cells} == {"base", "Neurology", XSS}
    assert XSS not in html.replace(json.dumps(XSS), "")


def test_two_models_trained_on_one_specialty_keep_their_own_heatmap_rows():
    """Two adapters trained on Neurology (0.8 and 0.3) were both the row "Neurology": their cells were drawn
    over one another in the accuracy heatmap (page and experiment report), one model hidden."""
    from specprobe.app.report import accuracy_frame
    from specprobe.finetune.accuracy_matrix import AccuracyMatrix
    from specprobe.reports.render import accuracy_matrix_page

    rows = [
        {"model": model, "trained_on": trained, "specialty": spec, "n": 100, "n_correct": round(acc * 100),
         "acc": acc, "acc_lo": acc - 0.1, "acc_hi": acc + 0.1, "n_correct_norm": round(acc * 100),
         "acc_norm": acc, "acc_norm_lo": acc - 0.1, "acc_norm_hi": acc + 0.1}
        for model, trained, acc in (("base", "", 0.5), ("lr1", "Neurology", 0.8), ("lr2", "Neurology", 0.3), ("c", "Cardiology", 0.6))
        for spec in ("Neurology", "Cardiology")
    ]  # fmt: skip
    matrix = AccuracyMatrix(pd.DataFrame(rows), {"base": "tiny"})
    cells = [r for v in accuracy_matrix_page(matrix).charts()[0].spec["datasets"].values() for r in v]
    keys = [(c["fine-tuned on"], c["specialty"]) for c in cells]
    assert len(set(keys)) == len(keys) == 8
    assert {c["fine-tuned on"] for c in cells} == {"base", "Neurology (lr1)", "Neurology (lr2)", "Cardiology"}
    frame = accuracy_frame(matrix)
    assert not frame.duplicated(["train_specialty", "test_specialty"]).any()
    assert frame.set_index(["train_specialty", "test_specialty"])["accuracy"].to_dict()[
        ("Neurology (lr2)", "Neurology")
    ] == pytest.approx(0.3)


def test_table_numbers_read_alike():
    """One rule for every table: 3 significant digits, no exponent, p-values as <0.001; a fixed-point
    format asked for is kept, a general one (".3g") is not."""
    from specprobe.reports.page import TableBlock

    frame = pd.DataFrame(
        {"mean": [0.08861, 2.496e-07], "p_holm": [2.496e-07, 0.0412], "acc": [0.5, 0.81234], "n": [3, 40]}
    )
    block = TableBlock.from_frame(frame, formats={"mean": ".3g", "acc": ".2f", "p_holm": ".2f"})
    text = [[c.text for c in row] for row in block.rows]
    assert text == [["0.0886", "<0.001", "0.50", "3"], ["0.000000250", "0.0412", "0.81", "40"]]
    assert block.rows[1][0].key == repr(2.496e-07)  # sorting still uses the exact value


def test_notebook_table_reads_p_values_as_the_report_does():
    """The notebook table took no column names: p_holm 0.04996 read "0.0500" (not significant) beside a
    significant mark, and 2.5e-9 "0.00000000250" instead of "<0.001"."""
    from specprobe.reports.notebook import _table_html

    html = _table_html(pd.DataFrame({"specialty": ["A", "B"], "p_holm": [0.04996, 2.5e-9], "mean": [0.1, 0.2]}), 16)
    cells = re.findall(r'<td class="num">([^<]*)</td>', html)
    assert cells == ["0.04996", "0.100", "&lt;0.001", "0.200"]


def test_comparison_page_has_no_exponents(comparison_html):
    _, html = comparison_html
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S))
    assert not re.search(r"\d[eE][-+]\d", text)


def test_counts_read_as_whole_numbers_where_a_missing_cell_made_them_float():
    """n and n_texts of a table with a missing cell are floats: they read '30.0' and '5.00' beside '–'."""
    from specprobe.reports.notebook import _table_html

    frame = pd.DataFrame({"specialty": ["A", "B"], "n": [30.0, np.nan], "n_texts": [5.0, np.nan], "mean": [2.0, 0.5]})
    cells = re.findall(r'<td class="num">([^<]*)</td>', _table_html(frame, 16))
    assert cells == ["30", "5", "2.00", "–", "–", "0.500"]


def test_box_groups_keep_their_colours_when_one_is_absent():
    """Without own-specialty terms, 'other terms' took the orange meant for own-specialty terms."""
    from specprobe.reports import charts

    stats = pd.DataFrame(
        [
            {"category": "A", "group": g, "lo": -1.0, "q1": -0.5, "median": 0.0, "q3": 0.5, "hi": 1.0, "n": 3}
            for g in ("other terms", "control words")
        ]
    )
    order = ["own-specialty terms", "other terms", "control words"]
    spec = charts.box_chart(
        stats, category="category", value_title="v", category_title="c", group="group", group_order=order
    ).to_dict()
    scales = [layer["encoding"]["color"]["scale"] for layer in spec["layer"] if "color" in layer.get("encoding", {})]
    assert scales and all(dict(zip(s["domain"], s["range"]))["other terms"] == "#2f5d9e" for s in scales)
