"""tools/compare.py on hand-written run folders (finished, in progress, missing)."""
import json
import os

from tools import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(epoch, acc1=None, **kw):
    r = {"epoch": epoch, "lr": 0.1, "train_loss": 1.0 / epoch, "train_acc1": 10.0 * epoch,
         "seconds": 1.0}
    if acc1 is not None or "evaluated" in kw:
        kw.pop("evaluated", None)
        r.update({"acc1": acc1, "acc5": 99.0, "many": 80.0 + epoch, "medium": 50.0 + epoch,
                  "few": 10.0 + epoch, "ece": 20.0 - epoch, "mce": 30.0, "best_acc1": acc1})
    r.update(kw)
    return r


def write_run(root, name, rows, tail=""):
    folder = root / name
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(tail)
    return str(folder)


def table_lines(text):
    lines = text.splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("run "))
    return lines[start:start + 2], lines[start + 2:]


def test_compare_two_runs_table_and_plot(tmp_path, capsys):
    a = write_run(tmp_path, "ce_202601010000", [row(1, 40.0), row(2, 55.5), row(3, 50.0)])
    # eval every 2 epochs: epoch 1 and 3 carry no test keys; epoch 4 has a null Acc@1
    b = write_run(tmp_path, "arb_202601010000",
                  [row(1), row(2, 60.25), row(3), row(4, None, evaluated=True)])
    out = tmp_path / "plots" / "cmp.png"
    assert compare.main([a, b, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    head, body = table_lines(text)
    assert head[0].split()[:4] == ["run", "epochs", "best", "Acc@1"]
    ce, arb = body[0], body[1]
    assert ce.split()[:6] == ["ce_202601010000", "3", "55.50", "2", "50.00", "3"]
    assert ce.split()[6:10] == ["82.00", "52.00", "12.00", "18.00"]  # at the best epoch (2)
    assert arb.split()[:6] == ["arb_202601010000", "4", "60.25", "2", "60.25", "2"]
    # aligned: every table line has the same length and numbers end in the same column
    assert len({len(s) for s in head + body[:2]}) == 1
    assert "at the best epoch" in text
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(out) > 1024


def test_compare_final_epoch_and_labels(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = write_run(tmp_path, "a", [row(1, 40.0), row(2, 55.5), row(3, 50.0)])
    assert compare.main([a, "--no-plot", "--at", "final", "--labels", "CE"]) == 0
    text = capsys.readouterr().out
    _, body = table_lines(text)
    assert body[0].split() == ["CE", "3", "55.50", "2", "50.00", "3", "83.00", "53.00",
                               "13.00", "17.00"]
    assert "at the final evaluated epoch" in text
    assert not os.path.exists("compare.png")  # --no-plot


def test_compare_run_in_progress_with_partial_last_line(tmp_path, capsys):
    a = write_run(tmp_path, "live", [row(1, 30.0), row(2, 45.0)], tail='{"epoch": 3, "lr": 0.')
    assert compare.main([a, "--out", str(tmp_path / "c.png"), "--metric", "few"]) == 0
    text = capsys.readouterr().out
    _, body = table_lines(text)
    assert body[0].split()[:6] == ["live", "2", "45.00", "2", "45.00", "2"]
    assert "note: live: partial last line ignored" in text
    assert os.path.getsize(tmp_path / "c.png") > 1024


def test_compare_run_without_any_evaluation(tmp_path, capsys):
    a = write_run(tmp_path, "noeval", [row(1), row(2)])
    assert compare.main([a, "--no-plot"]) == 0
    _, body = table_lines(capsys.readouterr().out)
    assert body[0].split() == ["noeval", "2"] + ["-"] * 8


def test_compare_missing_metrics_is_a_clear_error(tmp_path, capsys):
    a = write_run(tmp_path, "ok", [row(1, 30.0)])
    missing = tmp_path / "empty_run"
    missing.mkdir()
    assert compare.main([a, str(missing), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compare.py: error: ")
    assert "empty_run: no metrics.jsonl" in err[0]
    assert compare.main([a, "--labels", "x,y", "--no-plot"]) == 2


def test_compare_per_class_plot_from_eval_reports(tmp_path, capsys):
    runs = []
    for name, acc in (("ce", [90.0, 50.0, 0.0]), ("arb", [85.0, 70.0, 40.0])):
        folder = write_run(tmp_path, name, [row(1, 50.0)])
        rep_dir = os.path.join(folder, "eval_model_best")
        os.makedirs(rep_dir)
        classes = [{"class": i, "train_count": n, "group": g, "test_count": 10,
                    "accuracy": a, "weight_norm": 1.0 + i} for i, (n, g, a) in
                   enumerate(zip((100, 30, 5), ("many", "medium", "few"), acc))]
        with open(os.path.join(rep_dir, "report.json"), "w") as f:
            json.dump({"ranges": {"many": [0, 1], "medium": [1, 2], "few": [2, 3]},
                       "classes": classes}, f)
        runs.append(folder)
    out = tmp_path / "pc.png"
    assert compare.main([*runs, "--no-plot", "--per-class-out", str(out)]) == 0
    assert os.path.getsize(out) > 1024
    assert compare.main([runs[0], str(tmp_path / "missing"), "--no-plot"]) == 2
    other = write_run(tmp_path, "noreport", [row(1, 50.0)])
    assert compare.main([runs[0], other, "--no-plot", "--per-class-out", str(out)]) == 2
    assert "eval_model_best/report.json" in capsys.readouterr().err


def test_compare_plot_defaults_beside_the_first_run_not_in_the_cwd(tmp_path, capsys,
                                                                   monkeypatch):
    saved = tmp_path / "saved"
    saved.mkdir()
    a = write_run(saved, "ce_202601010000", [row(1, 40.0), row(2, 55.5)])
    b = write_run(saved, "arb_202601010000", [row(1, 45.0), row(2, 60.0)])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert compare.main([a, b]) == 0
    assert f"plot: {saved / 'compare_acc1.png'}" in capsys.readouterr().out
    assert os.listdir(cwd) == []
    assert compare.main([os.path.join(b, "metrics.jsonl"), a, "--metric", "few"]) == 0
    assert sorted(os.listdir(saved)) == ["arb_202601010000", "ce_202601010000",
                                         "compare_acc1.png", "compare_few.png"]
    with open(saved / "compare_few.png", "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert compare.main([a, "--out", "mine.png"]) == 0  # --out: relative to the cwd
    assert os.listdir(cwd) == ["mine.png"]
