"""Figures quoted outside docs/BENCHMARKS.md are the bench's, not hand-written: the generated tables
in docs/motion.md and docs/installer.md are what `paydbox bench` writes from BENCHMARKS.md's figures,
and a partial (--only) run keeps the other modules' sections."""
import os
import shutil

from tools.bench import runner as bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_doc_tables_match_benchmarks(tmp_path):
    mods = bench.figures_from_markdown(os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    for rel, (mod, _rows) in bench.DOC_TABLES.items():
        assert mod in mods, "%s has no section in BENCHMARKS.md" % mod
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, rel), dst)
        assert "<!-- bench:%s -->" % mod in dst.read_text(), rel
    assert sorted(bench.update_doc_tables(mods, root=str(tmp_path))) == sorted(bench.DOC_TABLES)
    for rel in bench.DOC_TABLES:
        with open(os.path.join(ROOT, rel)) as f:
            assert (tmp_path / rel).read_text() == f.read(), "%s: figures differ from BENCHMARKS.md" % rel


def test_update_writes_the_figures(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "installer.md").write_text(
        "x\n<!-- bench:bench_installer -->\nSTALE-FIGURES\n<!-- /bench -->\ny\n")
    bench.update_doc_tables({"bench_installer": {"figures": {"firmware_bytes": 115200, "firmware_files": 7,
                                                             "console_roundtrip_ms": 0.5}}},
                            root=str(tmp_path))
    t = (tmp_path / "docs" / "installer.md").read_text()
    assert "STALE-FIGURES" not in t and "| full firmware (7 files), bytes of .mpy | 115200 |" in t
    assert "| console round trip (ms) | 0.5 |" in t and "| cold build (s) | - |" in t
    assert "transfer alone (s) | 10 |" in t and t.startswith("x\n") and t.endswith("<!-- /bench -->\ny\n")


def test_partial_run_keeps_other_sections(tmp_path):
    out = tmp_path / "B.md"
    out.write_text("# b\n\n## Benchmark modules\n\n### bench_a (1 s)\n\n| figure | value |\n|---|---|\n| x | "
                   "1 |\n\n"
                   "### bench_b (2 s)\n\n| figure | value |\n|---|---|\n| y | 2.5 |\n")
    prev = bench.previous_sections(str(out))
    assert sorted(prev) == ["bench_a", "bench_b"]
    assert bench.figures_from_markdown(str(out))["bench_b"]["figures"] == {"y": 2.5}
    bench.write_markdown(str(out), {}, {"bench_a": {"figures": {"x": 3}, "wall_s": 1}}, None, [], {}, True,
                         __import__("datetime").datetime(2026, 1, 1), 1.0, {"bench_b": prev["bench_b"]})
    t = out.read_text()
    assert "| x | 3 |" in t and "| y | 2.5 |" in t and "not rerun by this `--only` run" in t


def test_only_run_rewrites_its_sections_in_place(tmp_path):
    """`paydbox bench --only M`: M's section (heading with its run time, the module's NOTE, its table) is
    replaced where it stands; every other byte of the file, the evaluation included, stays."""
    out = tmp_path / "B.md"
    head = "# b\n\n## Evaluation\n\n```\nhand-run table\n```\n\n## Benchmark modules\n\n"
    a = "### bench_a (1 s)\n\n| figure | value |\n|---|---|\n| x | 1 |\n\n"
    c = "### bench_c (2 s)\n\nits note\n\n| figure | value |\n|---|---|\n| y | 2.5 |\n"
    out.write_text(head + a + c)
    bench.splice_sections(str(out), {"bench_a": {"figures": {"x": 3}, "wall_s": 4, "note": "what it runs",
                                                 "at": "2026-12-02 01:00 UTC"},
                                     "bench_new": {"figures": {"z": 1}, "wall_s": 1}})
    t = out.read_text()
    assert t.startswith(head) and c in t
    assert ("### bench_a (4 s, 2026-12-02 01:00 UTC)\n\nwhat it runs\n\n| figure | value |\n|---|---|\n| x | "
            "3 |\n") in t
    assert "| x | 1 |" not in t and t.rstrip().endswith("| z | 1 |")
    assert bench.figures_from_markdown(str(out))["bench_a"]["figures"] == {"x": 3}
