"""The grouping units: captions, images linked with captions, unordered noun pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.data.groups import image_caption_groups, noun_pair_groups
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


def test_noun_pair_caption_groups_keep_noun_pairs_and_repeated_captions_together():
    from analysis.data.groups import noun_pair_caption_groups
    t = pd.DataFrame({"caption": ["a", "b", "c", "c", "d", "e"],
                      "subject": ["cat", "dog", None, None, "cat", "bed"],
                      "object": ["dog", "cat", None, None, "bed", "cat"],
                      "parsed": [True, True, False, False, True, True]})
    g = noun_pair_caption_groups(t)
    assert g[0] == g[1]            # the same unordered noun pair
    assert g[2] == g[3]            # a repeated caption without parsed nouns: one unit, not two rows
    assert g[4] == g[5] != g[0]    # cat|bed is its own pair: sharing one noun does not link
    assert len(set(g)) == 3
    # noun-pair groups as the older function made them, refined by captions: never finer
    t = toy_table(seed=2).assign(row_id=lambda d: [f"r{k}" for k in range(len(d))])
    g = noun_pair_caption_groups(t)
    assert (pd.Series(g).groupby(t["caption"].to_numpy()).nunique() == 1).all()
    pairs = ["|".join(sorted([str(a), str(b)])) for a, b in zip(t["subject"], t["object"])]
    assert (pd.Series(g).groupby(pairs).nunique() == 1).all()


def test_row_nouns_codes_both_nouns_of_every_row():
    from analysis.data.groups import row_nouns
    t = pd.DataFrame({"subject": ["cat", "dog", None], "object": ["dog", "bed", None],
                      "parsed": [True, True, False]})
    names, codes = row_nouns(t)
    assert names == ["bed", "cat", "dog"]
    np.testing.assert_array_equal(codes, [[1, 2], [2, 0], [-1, -1]])
