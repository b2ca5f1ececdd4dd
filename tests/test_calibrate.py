"""regioncap.calibrate: the match threshold, worked out by hand, and on a tiny held-out set."""

import json

import pytest

from regioncap.calibrate import best_threshold, main, read_threshold, similarity_pairs


def test_best_threshold_by_hand():
    # positives 0.9 0.8 0.3; negatives 0.5 0.1 0.0 0.2
    # t=0.8: TPR 2/3, FPR 0 -> J 0.667;  t=0.3: TPR 1, FPR 1/4 -> J 0.75 (best);  t=0.5: TPR 2/3, FPR 1/4
    out = best_threshold([0.9, 0.8, 0.3], [0.5, 0.1, 0.0, 0.2])
    assert out == {"match_threshold": 0.3, "tpr": 1.0, "fpr": 0.25, "positives": 3, "negatives": 4}
    assert best_threshold([0.9], [0.1])["match_threshold"] == 0.9  # separable: the lowest positive
    with pytest.raises(ValueError):
        best_threshold([], [0.1])


def test_similarity_pairs_and_the_written_file(saved_model, tmp_path, capsys):
    from regioncap.data.synthetic import main as synthetic_main

    synthetic_main([str(tmp_path / "data"), "--images", "3", "--seed", "4", "--splits", "0,1,0"])
    model, folder = saved_model
    positives, negatives = similarity_pairs(model, tmp_path / "data", "val")
    assert positives and negatives and all(-1.0001 <= v <= 1.0001 for v in positives + negatives)
    capsys.readouterr()
    assert read_threshold(folder) is None
    assert main(["--model", str(folder), "--data", str(tmp_path / "data"), "--write"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert read_threshold(folder) == printed["match_threshold"] == best_threshold(positives, negatives)[
        "match_threshold"]
    (folder / "calibration.json").write_text("{not json")
    assert read_threshold(folder) is None


def test_a_threshold_that_is_no_number_is_no_threshold(tmp_path):
    """NaN and Infinity pass json.loads; a NaN threshold would make every similarity fail to match."""
    for text in ('{"match_threshold": NaN}', '{"match_threshold": Infinity}', '{"match_threshold": true}'):
        (tmp_path / "calibration.json").write_text(text)
        assert read_threshold(tmp_path) is None, text
    (tmp_path / "calibration.json").write_text('{"match_threshold": 0.275}')
    assert read_threshold(tmp_path) == 0.275


def test_refusals_are_one_line_and_write_only_into_a_local_folder(saved_model, tmp_path, capsys):
    _, folder = saved_model
    for argv in (["--model", "someone/a-hub-model", "--data", str(tmp_path), "--write"],  # never into the cache
                 ["--model", str(folder), "--data", str(tmp_path / "no-data")]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err
    assert read_threshold(folder) is None


def test_only_our_own_calibration_file_counts_as_ours(tmp_path):
    from regioncap.calibrate import RULE, written_by_us, write_calibration

    assert not written_by_us(tmp_path)
    (tmp_path / "calibration.json").write_text('{"match_threshold": 0.5}')  # someone else's
    assert not written_by_us(tmp_path) and read_threshold(tmp_path) == 0.5
    write_calibration(tmp_path, {"match_threshold": 0.25, "rule": RULE})
    assert written_by_us(tmp_path) and read_threshold(tmp_path) == 0.25
