"""On-disk layout: embeddings round-trip with their row ids; bad vectors are refused."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import store
from analysis.store import (base_condition, is_image_condition, load_embeddings, parse_split_key,
                            primary_view, save_embeddings)


def test_non_finite_vectors_are_an_error_naming_rows(tmp_path):
    meta = {"row_ids": ["r/1", "r/2", "r/3"]}
    good = np.ones((3, 4), dtype=np.float32)
    layers = np.ones((2, 3, 4), dtype=np.float32)
    layers[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"layers: non-finite values in rows \['r/3'\]"):
        save_embeddings("sbert", "random", "dev", {"mean": good, "layers": layers}, meta, root=tmp_path)
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values in rows \['r/2'\]"):
        save_embeddings("sbert", "random", "dev", {"mean": bad}, meta, root=tmp_path)
    with pytest.raises(ValueError, match=r"rows on axis 1"):
        save_embeddings("sbert", "random", "dev", {"mean": good, "layers": layers[:, :2]}, meta, root=tmp_path)
    out = save_embeddings("sbert", "random", "dev", {"mean": good, "layers": np.ones((2, 3, 4))}, meta,
                          root=tmp_path)
    saved = load_embeddings("sbert", "random", "dev", view="layers", root=tmp_path)
    assert saved.X.shape == (2, 3, 4) and saved.meta["views"] == ["layers", "mean"] and out.is_dir()


def test_round_trip_keeps_rows_and_default_view(tmp_path):
    X = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    meta = {"row_ids": ["a", "b", "c"]}
    save_embeddings("clip_text", "random", "train", {"pooler_output": X, "text_embeds": 2 * X}, meta,
                    root=tmp_path)
    got = load_embeddings("clip_text", "random", "train", root=tmp_path)
    np.testing.assert_array_equal(got.X, X)  # pooler_output is clip_text's primary view
    assert list(got.row_ids) == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="conditions"):
        load_embeddings("sbert", "random", "train", root=tmp_path)


def test_random_baselines_share_their_models_views():
    assert base_condition("clip_text_random") == "clip_text"
    assert base_condition("sbert_random_s3") == "sbert"
    assert primary_view("clip_image_random_s1") == "image_embeds"
    assert is_image_condition("clip_image_random") and not is_image_condition("clip_text_random")


def test_split_keys():
    assert parse_split_key("zeroshot/dev") == ("zeroshot", "dev")
    assert parse_split_key("templates/all") == ("templates", "all")
    with pytest.raises(ValueError, match="bad split key"):
        parse_split_key("random/validation")


def test_has_view_reads_the_sidecar(tmp_path):
    store.save_embeddings("sbert", "random", "train", {"mean": np.ones((2, 3), np.float32)},
                          {"row_ids": ["a", "b"]}, tmp_path)
    assert store.has_view("sbert", "random", "train", "mean", tmp_path)
    assert not store.has_view("sbert", "random", "train", "layers", tmp_path)
    assert not store.has_view("clip_text", "random", "train", "mean", tmp_path)
