"""Stage `images`: distinct-image collection, decode checks, the manifest, downloads from a local
HTTP server (good JPEGs, a 404, a truncated body, a corrupt JPEG), resume, the second-run skip,
the `images.dir` path with the shipped fixture images, and the no-image-condition skip."""

from __future__ import annotations

import hashlib
import os
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.common.store import is_image_condition

from analysis.data import images
from analysis.common import store
from analysis.data.download import part_path
from analysis.data.images import ImagesError, collect_images, decode_error
from tests.data.test_download import Route, make_jpeg, serving

HEADER = "image,path,sha256,bytes,status,error"


def table(rows: list[tuple[str, str]], key: str = "random/train") -> pd.DataFrame:
    """A VSR-like table with the columns this stage reads (row_id, image, image_link)."""
    return pd.DataFrame({"row_id": [f"{key}/{i + 1:05d}" for i in range(len(rows))],
                         "image": [r[0] for r in rows], "image_link": [r[1] for r in rows]})


def write_workspace(root: Path, tables: dict[str, pd.DataFrame], conditions: list[str],
                    **images_cfg) -> Path:
    """Split tables under data/vsr and a params file selecting ``conditions``; returns the file."""
    for key, df in tables.items():
        variant, split = key.split("/")
        path = root / store.table_path(variant, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    cfg = {"dir": None, "splits": list(tables), "workers": 4, "retries": 1, "backoff_s": 0.01,
           "timeout_s": 2.0, **images_cfg}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"conditions": {"image": [c for c in conditions if is_image_condition(c)], "text": [c for c in conditions if not is_image_condition(c)]}, "images": cfg}))
    return params


def read_manifest(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / store.IMAGE_MANIFEST, dtype={
        "image": str, "path": str, "sha256": str, "bytes": "Int64", "status": str, "error": str})


# --------------------------------------------------------------------------- pure functions


def test_collect_images_keeps_each_image_once_with_its_link():
    tables = {"random/train": table([("b.jpg", "u/b"), ("a.jpg", "u/a"), ("b.jpg", "u/b")]),
              "random/dev": table([("c.jpg", "u/c"), ("a.jpg", "u/a")], "random/dev")}
    assert collect_images(tables) == {"b.jpg": "u/b", "a.jpg": "u/a", "c.jpg": "u/c"}


def test_collect_images_rejects_one_image_with_two_links():
    tables = {"random/train": table([("a.jpg", "u/a")]),
              "random/dev": table([("a.jpg", "u/other")], "random/dev")}
    with pytest.raises(ImagesError, match="random/dev row random/dev/00001.*u/other"):
        collect_images(tables)


@pytest.mark.parametrize("name", ["../a.jpg", "sub/a.jpg", "", "..", "a\\b.jpg", None])
def test_collect_images_rejects_names_that_are_not_plain_files(name):
    with pytest.raises(ImagesError, match="random/train row random/train/00001: field 'image'"):
        collect_images({"random/train": table([(name, "u")])})


def test_decode_error_accepts_a_jpeg_and_names_what_is_wrong_with_bad_bytes(tmp_path):
    jpeg = make_jpeg(1)
    good, cut, junk, empty = (tmp_path / n for n in ("good.jpg", "cut.jpg", "junk.jpg", "e.jpg"))
    good.write_bytes(jpeg)
    cut.write_bytes(jpeg[: len(jpeg) // 2])
    junk.write_bytes(b"not an image at all")
    empty.write_bytes(b"")
    assert decode_error(good) is None
    assert "truncated" in decode_error(cut)
    assert "cannot identify image" in decode_error(junk)
    assert decode_error(empty)


def test_build_manifest_has_the_contract_columns_sorted_by_image():
    rows = [images.manifest_row("b.jpg", "p/b", "ok", sha256="x", size=3),
            images.manifest_row("a.jpg", "p/a", "missing", "HTTP 404")]
    df = images.build_manifest(rows)
    assert list(df.columns) == HEADER.split(",")
    assert df["image"].tolist() == ["a.jpg", "b.jpg"]
    assert images.summarize(df) == {"ok": 1, "missing": 1, "corrupt": 0}
    with pytest.raises(ValueError, match="unknown image status"):
        images.build_manifest([images.manifest_row("a.jpg", "p", "zero-filled")])


# --------------------------------------------------------------------------- the stage, downloading


@pytest.fixture
def server():
    with serving() as srv:
        yield srv


@pytest.fixture
def served(server, tmp_path, monkeypatch):
    """Three good JPEGs, a 404, a body that always ends early, a corrupt JPEG; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    bodies = {f"{i:012d}.jpg": make_jpeg(i) for i in (3, 1, 2)}
    for name, body in bodies.items():
        server.routes[f"/{name}"] = Route(body)
    truncated = make_jpeg(7)
    server.routes["/000000000007.jpg"] = Route(truncated, kind="truncate")
    corrupt = make_jpeg(8)[:900]  # served whole (Content-Length matches), but a cut-off JPEG
    server.routes["/000000000008.jpg"] = Route(corrupt)
    rows = [(n, server.url(f"/{n}")) for n in [*bodies, "000000000404.jpg", "000000000007.jpg",
                                                 "000000000008.jpg"]]
    tables = {"random/train": table(rows[:4]),
              "zeroshot/test": table([rows[0], *rows[4:]], "zeroshot/test")}
    params = write_workspace(tmp_path, tables, ["sbert", "clip_image"])
    return params, bodies, corrupt


def test_download_writes_manifest_with_ok_missing_and_corrupt(served, server, tmp_path, caplog):
    params, bodies, corrupt = served
    with caplog.at_level(logging.INFO, logger="images"):
        assert images.main(["--params", str(params)]) == 0
    m = read_manifest(tmp_path)
    assert list(m.columns) == HEADER.split(",")
    assert m["image"].tolist() == sorted(m["image"])
    by = m.set_index("image")
    for name, body in bodies.items():
        assert by.loc[name, "status"] == "ok"
        assert by.loc[name, "path"] == f"data/images/{name}"
        assert by.loc[name, "sha256"] == hashlib.sha256(body).hexdigest()
        assert by.loc[name, "bytes"] == len(body)
        assert (tmp_path / "data/images" / name).read_bytes() == body
    assert by.loc["000000000404.jpg", "status"] == "missing"
    assert "404" in by.loc["000000000404.jpg", "error"]
    assert pd.isna(by.loc["000000000404.jpg", "sha256"])
    assert pd.isna(by.loc["000000000404.jpg", "bytes"])
    assert by.loc["000000000007.jpg", "status"] == "missing"
    assert "truncated" in by.loc["000000000007.jpg", "error"]
    assert by.loc["000000000008.jpg", "status"] == "corrupt"
    assert by.loc["000000000008.jpg", "sha256"] == hashlib.sha256(corrupt).hexdigest()
    assert by.loc["000000000008.jpg", "error"]
    assert len(m) == 6  # every distinct image once, none dropped
    text = caplog.text
    assert "summary: 3 ok, 2 missing, 1 corrupt (of 6)" in text
    for bad in ("000000000404.jpg", "000000000007.jpg", "000000000008.jpg"):
        assert bad in text
    # the shared image was fetched once although two splits use it
    assert len(server.requests_for(f"/{next(iter(bodies))}")) == 1


def test_second_run_skips_verified_files(served, server, tmp_path, monkeypatch):
    params, bodies, _ = served
    assert images.main(["--params", str(params)]) == 0
    first = read_manifest(tmp_path)
    before = {n: len(server.requests_for(f"/{n}")) for n in bodies}
    decoded: list[str] = []
    real = images.decode_error
    monkeypatch.setattr(images, "decode_error", lambda p: decoded.append(p.name) or real(p))
    assert images.main(["--params", str(params)]) == 0
    assert not set(decoded) & set(bodies)  # verified files are not even decoded again
    second = read_manifest(tmp_path)
    pd.testing.assert_frame_equal(second.drop(columns="error"), first.drop(columns="error"))
    assert second["error"][second["status"] != "missing"].equals(
        first["error"][first["status"] != "missing"])
    assert {n: len(server.requests_for(f"/{n}")) for n in bodies} == before  # no re-download
    # the failed ones are tried again: a later run may succeed
    assert len(server.requests_for("/000000000404.jpg")) == 2
    assert len(server.requests_for("/000000000008.jpg")) == 2
    # and the truncated one resumes where the first run stopped
    assert server.requests_for("/000000000007.jpg")[2].startswith("bytes=")


def test_changed_file_is_checked_again(served, server, tmp_path):
    params, bodies, _ = served
    assert images.main(["--params", str(params)]) == 0
    name = next(iter(bodies))
    (tmp_path / "data/images" / name).write_bytes(b"garbage")  # differs in size from the cache
    assert images.main(["--params", str(params)]) == 0
    by = read_manifest(tmp_path).set_index("image")
    assert by.loc[name, "status"] == "ok"  # found corrupt, fetched again
    assert (tmp_path / "data/images" / name).read_bytes() == bodies[name]
    assert len(server.requests_for(f"/{name}")) == 2


def test_partial_download_is_resumed(served, server, tmp_path):
    params, bodies, _ = served
    name, body = next(iter(bodies.items()))
    part = part_path(tmp_path / "data/images" / name)
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    assert images.main(["--params", str(params)]) == 0
    assert server.requests_for(f"/{name}") == ["bytes=1000-"]
    assert (tmp_path / "data/images" / name).read_bytes() == body
    assert not part.exists()


def test_no_image_usable_is_a_failure(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = write_workspace(tmp_path, {"random/dev": table([("x.jpg", server.url("/x.jpg"))],
                                                            "random/dev")}, ["clip_concat"])
    assert images.main(["--params", str(params)]) == 1
    assert read_manifest(tmp_path)["status"].tolist() == ["missing"]


# --------------------------------------------------------------------------- images.dir and skips


def test_images_dir_is_used_in_place(tmp_path, monkeypatch, fixture_images):
    monkeypatch.chdir(tmp_path)
    names = sorted(p.name for p in fixture_images.glob("*.jpg"))[:4]
    rows = [(n, "http://127.0.0.1:9/never-fetched") for n in names]
    rows.append(("000000999999.jpg", "http://127.0.0.1:9/never-fetched"))
    params = write_workspace(tmp_path, {"random/test": table(rows, "random/test")},
                             ["clip_image"], dir=str(fixture_images))
    assert images.main(["--params", str(params)]) == 0
    by = read_manifest(tmp_path).set_index("image")
    for n in names:
        src = fixture_images / n
        assert by.loc[n, "status"] == "ok"
        assert by.loc[n, "path"] == f"data/images/{n}"  # linked in: no author path in outputs
        assert (tmp_path / "data/images" / n).read_bytes() == src.read_bytes()
        assert by.loc[n, "sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
        assert by.loc[n, "bytes"] == src.stat().st_size
    assert by.loc["000000999999.jpg", "status"] == "missing"
    assert by.loc["000000999999.jpg", "error"] == f"not in images.dir {fixture_images}"
    assert not (tmp_path / "data/images/000000999999.jpg").exists()
    for written in (tmp_path / "results/images/manifest.csv", tmp_path / "data/images/.verified.json"):
        text = written.read_text()
        assert str(tmp_path) not in text and str(fixture_images.resolve()) not in text.replace(
            f"not in images.dir {fixture_images}", ""), written
    # a second run finds the links in place and the verified record valid
    assert images.main(["--params", str(params)]) == 0
    assert read_manifest(tmp_path).equals(by.reset_index()[read_manifest(tmp_path).columns])


def test_images_dir_change_is_seen_through_the_link(tmp_path, monkeypatch, fixture_images):
    """An image replaced in images.dir is linked and checked again (a corrupt one is reported)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "coco"
    folder.mkdir()
    good, other = sorted(fixture_images.glob("*.jpg"))[:2]
    for f in (good, other):
        shutil.copy2(f, folder / f.name)
    params = write_workspace(tmp_path, {"random/dev": table([(good.name, ""), (other.name, "")],
                                                             "random/dev")},
                             ["clip_image"], dir=str(folder))
    assert images.main(["--params", str(params)]) == 0
    (folder / good.name).unlink()
    (folder / good.name).write_bytes(good.read_bytes()[:200])  # a new file, truncated
    assert images.main(["--params", str(params)]) == 0
    row = read_manifest(tmp_path).set_index("image").loc[good.name]
    assert row["status"] == "corrupt" and row["path"] == f"data/images/{good.name}"
    assert (tmp_path / "data/images" / good.name).stat().st_size == 200


def test_link_into_falls_back_to_a_copy(tmp_path, monkeypatch):
    src, dest = tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"
    src.write_bytes(b"x" * 10)
    dest.parent.mkdir()
    assert images.link_into(src, dest) == "linked" and os.path.samefile(src, dest)
    assert images.link_into(src, dest) == "present"
    dest.unlink()

    def no_links(*_):
        raise OSError("cross-device link")
    monkeypatch.setattr(images.os, "link", no_links)
    assert images.link_into(src, dest) == "copied" and dest.read_bytes() == src.read_bytes()


def test_images_dir_reports_corrupt_files(tmp_path, monkeypatch, fixture_images):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "coco"
    folder.mkdir()
    good = sorted(fixture_images.glob("*.jpg"))[0]
    shutil.copy2(good, folder / good.name)
    (folder / "000000000001.jpg").write_bytes(good.read_bytes()[:200])
    params = write_workspace(tmp_path, {"random/dev": table(
        [(good.name, ""), ("000000000001.jpg", "")], "random/dev")}, ["clip_image"],
        dir=str(folder))
    assert images.main(["--params", str(params)]) == 0
    assert read_manifest(tmp_path).set_index("image")["status"].to_dict() == {
        "000000000001.jpg": "corrupt", good.name: "ok"}


def test_images_dir_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = write_workspace(tmp_path, {"random/dev": table([("a.jpg", "")], "random/dev")},
                             ["clip_image"], dir="no/such/folder")
    with pytest.raises(ImagesError, match="images.dir 'no/such/folder' is not a directory"):
        images.main(["--params", str(params)])


def test_no_image_condition_writes_header_only_manifest(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no data/vsr here: the stage must not need it
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"conditions": {"text": ["sbert", "clip_text"]},
                                      "images": {"dir": None, "splits": ["random/train"]}}))
    with caplog.at_level(logging.INFO, logger="images"):
        assert images.main(["--params", str(params)]) == 0
    assert (tmp_path / store.IMAGE_MANIFEST).read_text().strip() == HEADER
    assert (tmp_path / store.IMAGES_DIR).is_dir()  # a DVC out: must exist
    assert "skipped" in caplog.text


def test_template_split_is_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"conditions": {"image": ["clip_image"]},
                                      "images": {"splits": ["templates/all"]}}))
    with pytest.raises(ImagesError, match="images.splits: templates/all has no images"):
        images.main(["--params", str(params)])


def test_missing_split_table_names_the_vsr_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"conditions": {"image": ["clip_image"]},
                                      "images": {"splits": ["random/dev"]}}))
    with pytest.raises(FileNotFoundError, match="run the 'vsr' stage"):
        images.main(["--params", str(params)])


def test_offline_download_stops_at_once_naming_images_dir(tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr("analysis.data.download.time.sleep", slept.append)
    links = {f"{i:012d}.jpg": f"http://coco-images.invalid/{i:012d}.jpg" for i in range(50)}
    cfg = images.ImagesSettings(splits=["random/train"], workers=4, retries=5)
    with pytest.raises(ImagesError) as err:
        images.acquire(links, cfg, "params.yaml", images_dir=tmp_path / "images")
    assert "images.dir" in str(err.value) and "no network" in str(err.value)
    assert slept == []
