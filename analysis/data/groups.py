"""The units rows are grouped by, for cross-validation and for resampling: one home for every
group definition. VSR repeats captions (4,288 distinct over 10,972 rows) and images, so
ungrouped folds put the same caption or image on both sides of a split; grouping keeps every
group on one side, and resampling groups keeps dependent rows together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def caption_groups(table: pd.DataFrame) -> np.ndarray:
    """Group = the caption string (text conditions)."""
    return ("cap:" + table["caption"].astype(str)).to_numpy()


def image_caption_groups(table: pd.DataFrame) -> np.ndarray:
    """Group = connected component of rows linked by a shared image or a shared caption, so no
    image and no caption is on both sides of a split (image conditions)."""
    n = len(table)
    img = pd.factorize(table["image"].astype(str))[0]
    cap = pd.factorize(table["caption"].astype(str))[0]
    # bipartite graph: rows 0..n-1, images n.., captions n+n_img..
    n_img = img.max() + 1
    rows = np.r_[np.arange(n), np.arange(n)]
    cols = np.r_[n + img, n + n_img + cap]
    size = n + n_img + cap.max() + 1
    graph = coo_matrix((np.ones(2 * n), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return np.array([f"ic:{c}" for c in labels[:n]], dtype=object)


def noun_pair_groups(table: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Group = the unordered (subject, object) noun pair, so a probe cannot score by memorizing
    nouns. Rows whose nouns were not parsed fall back to their caption group; returns the
    groups and the number of such fallbacks (to report)."""
    subj = table["subject"]
    obj = table["object"]
    parsed = subj.notna() & obj.notna()
    if "parsed" in table:
        parsed &= table["parsed"].fillna(False).astype(bool)
    pair = np.where(
        parsed,
        ["np:" + "|".join(sorted((str(s), str(o)))) for s, o in zip(subj, obj)],
        caption_groups(table),
    )
    return pair.astype(object), int((~parsed).sum())


def noun_pair_or_row_groups(table: pd.DataFrame) -> np.ndarray:
    """Resampling unit of the geometry's caption bootstrap: the unordered noun pair (captions
    about the same two nouns are not independent), the template set's ``pair_id``, or the row
    itself where the nouns were not parsed."""
    if "pair_id" in table:
        return table["pair_id"].to_numpy(dtype=str)
    out = []
    for rid, s, o, ok in zip(table["row_id"], table["subject"], table["object"], table["parsed"]):
        out.append("|".join(sorted([str(s), str(o)])) if ok else f"row:{rid}")
    return np.asarray(out)
