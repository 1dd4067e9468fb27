"""On-disk layout: embeddings round-trip with their row ids; bad vectors are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.common import store
from analysis.common.store import (base_condition, is_image_condition, load_embeddings, parse_split_key,
                            primary_view, save_embeddings)


def test_non_finite_vectors_are_an_error_naming_rows(tmp_path):
    meta = {"row_ids": ["r/1", "r/2", "r/3"]}
    good = np.ones((3, 4), dtype=np.float32)
    layers = np.ones((2, 3, 4), dtype=np.float32)
    layers[1, 2, 0] = np.inf
    with pytest.raises(store.EmbeddingsError, match=r"layers: the encoder gave NaN or Inf for 1 rows, e.g. \['r/3'\]"):
        save_embeddings("sbert", "random", "dev", {"mean": good, "layers": layers}, meta, root=tmp_path)
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(store.EmbeddingsError, match=r"NaN or Inf for 1 rows, e.g. \['r/2'\]"):
        save_embeddings("sbert", "random", "dev", {"mean": bad}, meta, root=tmp_path)
    with pytest.raises(ValueError, match=r"rows on axis 1"):
        save_embeddings("sbert", "random", "dev", {"mean": good, "layers": layers[:, :2]}, meta, root=tmp_path)
    out = save_embeddings("sbert", "random", "dev", {"mean": good, "layers": np.ones((2, 3, 4))}, meta,
                          root=tmp_path)
    saved = load_embeddings("sbert", "random", "dev", view="layers", root=tmp_path)
    assert saved.X.shape == (2, 3, 4) and saved.meta["views"] == ["layers", "mean"] and out.is_dir()


def test_damaged_stored_vectors_are_an_error_naming_file_rows_and_condition(tmp_path):
    """NaN in a stored file (damaged, or written by other code) is caught when it is read."""
    meta = {"row_ids": ["r/1", "r/2", "r/3"]}
    out = save_embeddings("clip_text", "random", "dev", {"pooler_output": np.ones((3, 4))}, meta,
                          root=tmp_path)
    X = np.ones((3, 4), dtype=np.float32)
    X[2, 1] = np.nan
    np.save(out / "pooler_output.npy", X)
    with pytest.raises(store.EmbeddingsError) as err:
        load_embeddings("clip_text", "random", "dev", root=tmp_path)
    msg = str(err.value)
    assert "pooler_output.npy" in msg and "condition clip_text" in msg and "['r/3']" in msg
    assert "dvc repro embed@clip_text" in msg
    np.save(out / "pooler_output.npy", np.ones((2, 4), dtype=np.float32))
    with pytest.raises(store.EmbeddingsError, match="does not match the 3 row ids"):
        load_embeddings("clip_text", "random", "dev", root=tmp_path)


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


def test_alignment_to_a_table_in_both_directions():
    table = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "relation": ["r1", "r2", "r3", "r4"]})
    X = np.arange(9, dtype=np.float32).reshape(3, 3)
    emb = store.Embeddings(X, np.array(["c", "a", "d"]), {})
    V, covered = store.in_table_order(emb, table, "test")
    assert covered.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(V[covered], X[[1, 0, 2]])
    rows = store.table_in_embedding_order(emb, table, "test")
    assert rows["relation"].tolist() == ["r3", "r1", "r4"]
    L = np.stack([X, 2 * X])  # (L, N, D)
    VL, _ = store.in_table_order(store.Embeddings(L, emb.row_ids, {}), table, "t", layered=True)
    np.testing.assert_array_equal(VL[1][covered], 2 * X[[1, 0, 2]])
    stale = store.Embeddings(X, np.array(["a", "zz", "c"]), {})
    with pytest.raises(ValueError, match="not in the table"):
        store.in_table_order(stale, table, "test")
    with pytest.raises(ValueError, match="not in the table"):
        store.table_in_embedding_order(stale, table, "test")
