"""The `vsr` stage: caption parsing, row validation, meta-categories, the normalized table, and
the stage end to end on the shipped fixture (plus the real annotations where ../shared exists)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.common import store
from analysis.common.io import load_yaml
from analysis.data import vsr, vsr_format
from analysis.data.relations import META_DICT_PATH, load_meta_categories, parse_meta_dictionary
from analysis.data.vsr_format import (
    ChecksumError,
    VSRDataError,
    normalize,
    parse_caption,
    parse_line,
    read_split,
    relation_in_caption,
    validate_row,
)

ROOT = Path(__file__).resolve().parents[2]
KEYS = [(v, s) for v in ("random", "zeroshot") for s in ("train", "dev", "test")]
META, DECISIONS = load_meta_categories()
GOOD = {"image": "000000000001.jpg", "image_link": "http://images.cocodataset.org/x/000000000001.jpg",
        "caption": "The cat is on top of the dining table.", "label": 1, "relation": "on top of",
        "annotator_id": 3, "reference_frame": None}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def smoke_params(tmp_path: Path, **data_overrides) -> Path:
    """params.smoke.yaml with absolute fixture paths and ``data`` overrides, written to tmp."""
    params = load_yaml((ROOT / "params.smoke.yaml").read_text())
    params["data"]["mirror"] = str(ROOT / params["data"]["mirror"])
    params["data"].update(data_overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def caption_from_parts(subject: str, relation: str, obj: str) -> str:
    """Rebuild a VSR caption: copular except for the three verbal relations."""
    verb = relation if relation in {"contains", "has as a part", "consists of"} else f"is {relation}"
    return f"The {subject} {verb} the {obj}."


# ---------------------------------------------------------------- parse_caption


@pytest.mark.parametrize("caption, relation, expected", [
    ("The cat is on the mat.", "on", ("cat", "mat")),
    ("The dining table is at the left side of the potted plant.", "at the left side of",
     ("dining table", "potted plant")),
    ("The cat is in the sink.", "in", ("cat", "sink")),  # 'in' also inside 'sink'
    ("The person is on the dining table on the boat.", "on", ("person", "dining table on the boat")),
    ("The man on the left is on the bed.", "on", ("man on the left", "bed")),  # split at "is on"
    ("The suitcase contains the cat.", "contains", ("suitcase", "cat")),
    ("The bed has as a part the couch.", "has as a part", ("bed", "couch")),
    ("The cake consists of the banana.", "consists of", ("cake", "banana")),
    ("a Cat IS On an old mat", "on", ("Cat", "old mat")),  # case, articles, no period
    ("The  cell phone is  far away from  the bed .", "far away from", ("cell phone", "bed")),
    ("The horse is next to the hot dog.", "next to", ("horse", "hot dog")),
])
def test_parse_caption_reads_subject_and_object(caption, relation, expected):
    assert parse_caption(caption, relation) == expected


@pytest.mark.parametrize("caption, relation", [
    ("On the mat is the cat.", "on"),     # relation not between two phrases
    ("The cat is on.", "on"),             # no object
    ("is on the mat.", "on"),             # no subject
    ("The cat sits beside the dog.", "on"),
])
def test_parse_caption_returns_none_for_other_shapes(caption, relation):
    assert parse_caption(caption, relation) is None


def test_relation_in_caption_needs_whole_words():
    assert relation_in_caption("The cat is in the sink.", "in")
    assert not relation_in_caption("The cat is on the sink.", "in")
    assert relation_in_caption("The cat is AT THE  edge of the bed.", "at the edge of")
    assert not relation_in_caption("The cat is at the edge the bed.", "at the edge of")


# ---------------------------------------------------------------- meta-categories


def test_validate_row_derives_fields():
    out = validate_row({**GOOD, "reference_frame": 1.0}, META, file="f.jsonl", line=4)
    assert out["subject"] == "cat" and out["object"] == "dining table" and out["parsed"]
    assert out["meta_category"] == "Projective"
    assert out["reference_frame"] == "1" and out["annotator_id"] == 3 and out["label"] == 1


def test_validate_row_keeps_unparsed_rows_with_null_parts():
    row = {**GOOD, "caption": "On top of the table sits the cat."}
    out = validate_row(row, META, file="f.jsonl", line=1)
    assert not out["parsed"] and out["subject"] is None and out["object"] is None


@pytest.mark.parametrize("field", vsr_format.REQUIRED_FIELDS)
def test_validate_row_missing_field(field):
    row = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(VSRDataError) as e:
        validate_row(row, META, file="data/x.jsonl", line=7)
    assert str(e.value) == f"data/x.jsonl, line 7, field '{field}': required field missing"


@pytest.mark.parametrize("change, field", [
    ({"label": 2}, "label"),
    ({"label": True}, "label"),
    ({"label": "1"}, "label"),
    ({"label": 1.0}, "label"),
    ({"caption": "  "}, "caption"),
    ({"relation": ""}, "relation"),
    ({"image": 5}, "image"),
    ({"relation": "behind"}, "relation"),                       # not in the caption
    ({"caption": "The cat is zorbing the dog.", "relation": "zorbing"}, "relation"),  # unknown
    ({"annotator_id": "3"}, "annotator_id"),
    ({"reference_frame": 1.5}, "reference_frame"),
])
def test_validate_row_rejects_bad_values(change, field):
    with pytest.raises(VSRDataError) as e:
        validate_row({**GOOD, **change}, META, file="data/x.jsonl", line=12)
    assert str(e.value).startswith(f"data/x.jsonl, line 12, field '{field}': ")


def test_parse_line_errors_name_file_and_line():
    with pytest.raises(VSRDataError, match=r"^f\.jsonl, line 3: not valid JSON"):
        parse_line('{"image": ', file="f.jsonl", line=3)
    with pytest.raises(VSRDataError, match=r"^f\.jsonl, line 4: expected a JSON object"):
        parse_line("[1, 2]", file="f.jsonl", line=4)


def test_read_split_numbers_lines_from_one_and_rejects_blank_lines():
    lines = [json.dumps(GOOD), json.dumps({**GOOD, "label": 0})]
    rows = read_split(lines, META, file="f.jsonl")
    assert [r["line"] for r in rows] == [1, 2] and [r["label"] for r in rows] == [1, 0]
    with pytest.raises(VSRDataError, match=r"f\.jsonl, line 2: empty line"):
        read_split([lines[0], "\n", lines[1]], META, file="f.jsonl")
    with pytest.raises(VSRDataError, match="no rows"):
        read_split([], META, file="f.jsonl")
    with pytest.raises(VSRDataError, match=r"f\.jsonl, line 2: not valid UTF-8"):
        read_split([lines[0].encode(), b'{"caption": "caf\xe9"}\n'], META, file="f.jsonl")


# ---------------------------------------------------------------- normalize


def test_normalize_columns_row_ids_and_types():
    rows = read_split([json.dumps(GOOD), json.dumps({**GOOD, "reference_frame": 0.0,
                                                     "annotator_id": None})], META, file="f")
    df = normalize(rows, "random", "dev")
    assert list(df.columns) == ["row_id", "line", "image", "image_link", "caption", "label",
                                "relation", "subject", "object", "parsed", "meta_category",
                                "annotator_id", "reference_frame"]
    assert df["row_id"].tolist() == ["random/dev/00001", "random/dev/00002"]
    assert df["line"].tolist() == [1, 2]
    assert pd.isna(df.loc[0, "reference_frame"]) and df.loc[1, "reference_frame"] == "0"
    assert df.loc[0, "annotator_id"] == 3 and pd.isna(df.loc[1, "annotator_id"])
    assert df["label"].dtype == "int64" and df["parsed"].dtype == bool


# ---------------------------------------------------------------- the stage end to end


def run_stage(params: Path) -> dict:
    assert vsr.main(["--params", str(params)]) == 0
    return json.loads(Path("results/vsr/report.json").read_text())


def test_main_on_fixture(tmp_path, monkeypatch, fixture_vsr):
    params = smoke_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    report = run_stage(params)
    pins = load_yaml(params.read_text())["data"]["sha256"]
    total = 0
    for variant, split in KEYS:
        src = fixture_vsr / variant / f"{split}.jsonl"
        raw = store.raw_split_path(variant, split)
        assert raw.read_bytes() == src.read_bytes()
        lines = src.read_text().splitlines()
        df = store.load_split(variant, split)
        assert len(df) == len(lines)
        assert df["row_id"].tolist() == [f"{variant}/{split}/{i:05d}" for i in range(1, len(lines) + 1)]
        upstream = [json.loads(line) for line in lines]
        assert df["caption"].tolist() == [r["caption"] for r in upstream]
        assert df["label"].tolist() == [r["label"] for r in upstream]
        assert df["parsed"].all()
        for r in df.itertuples():  # parts rebuild the caption exactly
            assert caption_from_parts(r.subject, r.relation, r.object) == r.caption
        assert df["meta_category"].tolist() == [META[r["relation"]] for r in upstream]
        s = report["splits"][f"{variant}/{split}"]
        assert s["rows"] == len(lines) and s["sha256"] == pins[f"{variant}/{split}"] == sha(src.read_bytes())
        assert s["relations"] == dict(Counter(r["relation"] for r in upstream))
        assert sum(s["meta_categories"].values()) == len(lines)
        assert s["unparsed"] == 0 and s["unparsed_examples"] == []
        total += len(lines)
    assert report["totals"] == {"rows": total, "unparsed": 0, "parse_rate": 1.0}
    metrics = json.loads(Path("results/metrics/vsr.json").read_text())
    assert metrics == {"rows": total, "unparsed": 0, "parse_rate": 1.0}  # the totals only
    assert report["meta_category_decisions"]["among"]["chosen"] == "Topological"
    assert not list(Path("data/vsr/raw").rglob("*.download"))

    # a second run reuses the verified copies and writes the same tables
    before = {k: store.load_split(*k) for k in KEYS}
    run_stage(params)
    for k in KEYS:
        pd.testing.assert_frame_equal(store.load_split(*k), before[k])


def test_main_counts_and_reports_unparsed_captions(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    rows = [GOOD, {**GOOD, "caption": "On top of the dining table is the cat."}, GOOD]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (mirror / "random").mkdir(parents=True)
    (mirror / "random" / "dev.jsonl").write_bytes(data)
    params = smoke_params(tmp_path, mirror=str(mirror), variants=["random"], splits=["dev"],
                          sha256={"random/dev": sha(data)})
    monkeypatch.chdir(tmp_path)
    s = run_stage(params)["splits"]["random/dev"]
    assert s["unparsed"] == 1 and s["parsed"] == 2 and s["parse_rate"] == pytest.approx(2 / 3)
    assert s["unparsed_examples"] == [{"row_id": "random/dev/00002", "relation": "on top of",
                                       "caption": rows[1]["caption"]}]
    df = store.load_split("random", "dev")
    assert df["parsed"].tolist() == [True, False, True] and pd.isna(df.loc[1, "subject"])


def test_main_rejects_wrong_checksum(tmp_path, monkeypatch, fixture_vsr):
    wrong = "0" * 64
    pins = load_yaml((ROOT / "params.smoke.yaml").read_text())["data"]["sha256"]
    params = smoke_params(tmp_path, sha256={**pins, "random/dev": wrong})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChecksumError) as e:
        vsr.main(["--params", str(params)])
    msg = str(e.value)
    src = fixture_vsr / "random" / "dev.jsonl"
    assert str(src) in msg and wrong in msg and sha(src.read_bytes()) in msg
    assert not store.raw_split_path("random", "dev").exists()
    assert not list(Path("data/vsr/raw").rglob("*.download"))


def test_main_requires_every_split_pinned(tmp_path, monkeypatch):
    pins = load_yaml((ROOT / "params.smoke.yaml").read_text())["data"]["sha256"]
    del pins["zeroshot/test"]
    params = smoke_params(tmp_path, sha256=pins)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VSRDataError, match=r"data\.sha256\['zeroshot/test'\] is not set"):
        vsr.main(["--params", str(params)])
    assert not Path("data").exists()  # checked before anything is fetched


def test_main_names_a_missing_mirror_file(tmp_path, monkeypatch):
    (tmp_path / "mirror" / "random").mkdir(parents=True)
    params = smoke_params(tmp_path, mirror=str(tmp_path / "mirror"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VSRDataError, match=r"mirror/random/train\.jsonl not found"):
        vsr.main(["--params", str(params)])


@pytest.mark.parametrize("line3, where", [
    ('{"image": "x.jpg", "caption": ', "line 3: not valid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "image_link"}), "line 3, field 'image_link'"),
    (json.dumps({**GOOD, "label": 2}), "line 3, field 'label': expected 0 or 1, got 2"),
    (json.dumps({**GOOD, "relation": "under"}), "line 3, field 'relation': 'under' does not occur"),
])
def test_main_bad_rows_name_file_line_and_field(tmp_path, monkeypatch, line3, where):
    mirror = tmp_path / "mirror"
    data = (json.dumps(GOOD) + "\n") * 2 + line3 + "\n" + json.dumps(GOOD) + "\n"
    (mirror / "zeroshot").mkdir(parents=True)
    (mirror / "zeroshot" / "test.jsonl").write_text(data)
    params = smoke_params(tmp_path, mirror=str(mirror), variants=["zeroshot"], splits=["test"],
                          sha256={"zeroshot/test": sha(data.encode())})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VSRDataError) as e:
        vsr.main(["--params", str(params)])
    assert str(e.value).startswith(f"{mirror / 'zeroshot' / 'test.jsonl'}, {where}")
    assert not store.table_path("zeroshot", "test").exists()


def test_hf_source_downloads_pinned_files(tmp_path, monkeypatch, fixture_vsr):
    calls = []

    def fake_hf_hub_download(*, repo_id, filename, repo_type, revision):
        calls.append((repo_id, filename, repo_type, revision))
        variant = repo_id.rsplit("_", 1)[1]
        return str(fixture_vsr / variant / filename)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    params = smoke_params(tmp_path, mirror=None, source="hf", splits=["dev"],
                          hf={"datasets": {"random": "org/vsr_random", "zeroshot": "org/vsr_zeroshot"},
                              "revision": {"random": "abc", "zeroshot": "def"}})
    monkeypatch.chdir(tmp_path)
    report = run_stage(params)
    assert calls == [("org/vsr_random", "dev.jsonl", "dataset", "abc"),
                     ("org/vsr_zeroshot", "dev.jsonl", "dataset", "def")]
    assert set(report["splits"]) == {"random/dev", "zeroshot/dev"}
    assert store.raw_split_path("zeroshot", "dev").read_bytes() == \
        (fixture_vsr / "zeroshot" / "dev.jsonl").read_bytes()


def test_github_source_fetches_raw_urls_at_the_pinned_commit(tmp_path, monkeypatch, fixture_vsr):
    urls = []

    def fake_fetch(url, dest, **kw):
        urls.append(url)
        variant, split = url.rsplit("/", 2)[1], url.rsplit("/", 1)[1]
        Path(dest).write_bytes((fixture_vsr / variant / split).read_bytes())
        return Path(dest)

    monkeypatch.setitem(sys.modules, "analysis.data.download", types.SimpleNamespace(fetch=fake_fetch))
    params = smoke_params(tmp_path, mirror=None, source="github", variants=["random"])
    monkeypatch.chdir(tmp_path)
    run_stage(params)
    commit = load_yaml(params.read_text())["data"]["github"]["commit"]
    assert urls == [f"https://raw.githubusercontent.com/cambridgeltl/visual-spatial-reasoning/"
                    f"{commit}/data/splits/random/{s}.jsonl" for s in ("train", "dev", "test")]


def test_github_source_over_local_http(tmp_path, monkeypatch, fixture_vsr):
    """The real downloader against an HTTP server on 127.0.0.1 laid out like GitHub's raw URLs."""
    pytest.importorskip("analysis.data.download")
    import functools
    import http.server
    import shutil
    import threading

    www = tmp_path / "www"
    commit = load_yaml((ROOT / "params.smoke.yaml").read_text())["data"]["github"]["commit"]
    shutil.copytree(fixture_vsr, www / "org" / "vsr" / commit / "data" / "splits")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(vsr, "GITHUB_RAW", f"http://127.0.0.1:{server.server_port}/"
                            "{repo}/{commit}/data/splits/{variant}/{split}.jsonl")
        params = smoke_params(tmp_path, mirror=None, source="github",
                              github={"repo": "org/vsr", "commit": commit})
        monkeypatch.chdir(tmp_path)
        report = run_stage(params)
    finally:
        server.shutdown()
    assert set(report["splits"]) == {f"{v}/{s}" for v, s in KEYS}
    for v, s in KEYS:
        assert store.raw_split_path(v, s).read_bytes() == (fixture_vsr / v / f"{s}.jsonl").read_bytes()

    # a commit the server does not have: the stage stops with the downloader's error (the URL)
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")  # no verified copies to reuse
    params = smoke_params(tmp_path, mirror=None, source="github",
                          github={"repo": "org/vsr", "commit": "f" * 40})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(vsr, "GITHUB_RAW", f"http://127.0.0.1:{server.server_port}/"
                            "{repo}/{commit}/data/splits/{variant}/{split}.jsonl")
        with pytest.raises(VSRDataError, match=r"/org/vsr/f{40}/data/splits/random/train\.jsonl: HTTP 404"):
            vsr.main(["--params", str(params)])
    finally:
        server.shutdown()


# ---------------------------------------------------------------- the real annotations


@pytest.mark.integration
def test_real_vsr_checksums_and_parse_rate(tmp_path, monkeypatch, shared_vsr):
    real = load_yaml((ROOT / "params.yaml").read_text())["data"]
    params = smoke_params(tmp_path, mirror=str(shared_vsr), sha256=real["sha256"])
    monkeypatch.chdir(tmp_path)
    report = run_stage(params)
    rows = {k: s["rows"] for k, s in report["splits"].items()}
    assert rows["random/train"] == 7680 and rows["random/dev"] == 1097
    assert rows["random/test"] == 2195 and rows["zeroshot/train"] == 3489
    assert report["totals"]["parse_rate"] >= 0.999, report["splits"]
    relations = Counter()
    for s in report["splits"].values():
        relations.update(s["relations"])
    assert len(relations) == 66

    # upstream's zeroshot subj/obj fields: obj always equals ours; subj equals ours or is ours
    # with leading letters of "The " stripped (upstream used str.lstrip("The "))
    for split in ("train", "dev", "test"):
        df = store.load_split("zeroshot", split)
        up = [json.loads(line) for line in (shared_vsr / "zeroshot" / f"{split}.jsonl").open()]
        assert df["object"].tolist() == [r["obj"] for r in up]
        for ours, r in zip(df["subject"], up):
            assert ours == r["subj"] or (ours.endswith(r["subj"]) and
                                         set(ours[:len(ours) - len(r["subj"])]) <= set("The "))


def test_offline_github_source_names_data_mirror(tmp_path, monkeypatch):
    monkeypatch.setattr(vsr, "GITHUB_RAW", "http://github-raw.invalid/{repo}/{commit}/{variant}/{split}.jsonl")
    params = smoke_params(tmp_path, mirror=None, source="github", variants=["random"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VSRDataError) as err:
        vsr.main(["--params", str(params)])
    msg = str(err.value)
    assert "github-raw.invalid" in msg and "data.mirror" in msg and "not retried" in msg


def test_caption_overlap_counts_by_hand():
    """Test rows whose caption is in train, and of those with any / a majority of opposite
    training labels, counted by hand on a small table."""
    import pandas as pd
    from analysis.data.vsr import caption_overlap
    train = pd.DataFrame({"caption": ["a", "a", "a", "b", "c"], "label": [1, 1, 0, 0, 1]})
    test = pd.DataFrame({"caption": ["a", "a", "b", "c", "d"], "label": [1, 0, 0, 0, 1]})
    # a(1): train {1,1,0} -> any opposite, not majority; a(0): any and majority opposite;
    # b(0): train {0}: neither; c(0): train {1}: both; d: unseen
    got = caption_overlap(train, test)
    assert got["test_rows"] == 5 and got["caption_in_train"] == 4
    assert got["opposite_label_in_train"] == 3 and got["majority_opposite_in_train"] == 2
    assert got["share_in_train"] == 0.8 and got["share_opposite_of_shared"] == 0.75
    assert caption_overlap(train, test.iloc[4:])["share_opposite_of_shared"] is None
