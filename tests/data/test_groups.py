"""The grouping units: captions, images linked with captions, unordered noun pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.data.groups import image_caption_groups, noun_pair_groups, noun_pair_or_row_groups
from analysis.probes.folds import grouped_kfold


def toy_table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    caps = rng.integers(0, 60, size=n)
    imgs = caps * 2 + rng.integers(0, 2, size=n)  # two images per caption ...
    imgs[:5] = np.arange(5) * 2  # ... and a few images shared across captions
    subj = np.array(["cat", "dog", "car", "bed", "man"])[caps % 5]
    obj = np.array(["table", "cat", "tree", "sofa"])[caps % 4]
    return pd.DataFrame({"caption": [f"caption {c}" for c in caps],
                         "image": [f"{i}.jpg" for i in imgs],
                         "subject": subj, "object": obj, "parsed": True,
                         "label": rng.integers(0, 2, size=n)})


def test_image_caption_groups_link_shared_images_and_captions():
    t = pd.DataFrame({"caption": ["a", "a", "b", "c", "d"], "image": ["1", "2", "2", "3", "4"]})
    g = image_caption_groups(t)
    # rows 0-1 share a caption, 1-2 an image: one component; 3 and 4 alone
    assert g[0] == g[1] == g[2]
    assert len({g[0], g[3], g[4]}) == 3
    t = toy_table(seed=1)
    g = image_caption_groups(t)
    for tr, te in grouped_kfold(t["label"].to_numpy(), g, 3, seed=0):
        assert not set(t["image"].iloc[tr]) & set(t["image"].iloc[te])
        assert not set(t["caption"].iloc[tr]) & set(t["caption"].iloc[te])


def test_noun_pairs_are_unordered_and_unparsed_rows_fall_back_to_caption():
    t = pd.DataFrame({"caption": ["x", "y", "z"], "subject": ["cat", "dog", None],
                      "object": ["dog", "cat", None], "parsed": [True, True, False]})
    g, unparsed = noun_pair_groups(t)
    assert g[0] == g[1] and g[2] == "cap:z" and unparsed == 1


def test_geometry_groups_are_unordered_noun_pairs_or_the_row():
    t = pd.DataFrame({"row_id": ["r1", "r2", "r3"], "subject": ["cat", "dog", None],
                      "object": ["dog", "cat", None], "parsed": [True, True, False]})
    g = noun_pair_or_row_groups(t)
    assert g[0] == g[1] == "cat|dog" and g[2] == "row:r3"
    assert list(noun_pair_or_row_groups(t.assign(pair_id=["a", "b", "c"]))) == ["a", "b", "c"]


def _chain(n_images: int, rows_per: int, seed: int = 0) -> pd.DataFrame:
    """Images and captions chained into one component: image k shares a caption with k+1."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_images):
        for r in range(rows_per):
            rows.append({"image": f"im{k}", "caption": f"cap{k}-{r % 3}"})
        rows.append({"image": f"im{k}", "caption": f"cap{(k + 1) % n_images}-0"})  # the link
    return pd.DataFrame(rows).sample(frac=1, random_state=int(rng.integers(1000))).reset_index(drop=True)


def test_bounded_groups_split_a_giant_component_dropping_few_rows():
    from analysis.data.groups import bounded_image_caption_groups, size_summary

    t = _chain(60, 6)
    assert pd.Series(image_caption_groups(t)).nunique() == 1  # one giant component
    groups, keep = bounded_image_caption_groups(t, max_rows=40, seed=0)
    sizes = pd.Series(groups[keep]).value_counts()
    assert sizes.max() <= 40 and len(sizes) > 5
    assert (~keep).sum() <= 0.1 * len(t)  # only linking rows are left out
    kept = t[keep]
    g = groups[keep]
    for col in ("image", "caption"):  # no image and no caption in two groups
        assert (pd.DataFrame({"k": kept[col].to_numpy(), "g": g}).groupby("k")["g"].nunique() == 1).all()
    again, keep2 = bounded_image_caption_groups(t, max_rows=40, seed=0)
    assert (again == groups).all() and (keep2 == keep).all()  # seeded
    same, all_kept = bounded_image_caption_groups(t, max_rows=None)
    assert all_kept.all() and pd.Series(same).nunique() == 1
    summary = size_summary(groups[keep])
    assert summary["max"] == sizes.max() and summary["rows"] == keep.sum()
