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
    labels = _linked(table["image"].astype(str), table["caption"].astype(str))
    return np.array([f"ic:{c}" for c in labels], dtype=object)


def _linked(first: pd.Series | np.ndarray, second: pd.Series | np.ndarray) -> np.ndarray:
    """Connected component of each row in the graph linking rows that share a value of
    ``first`` or of ``second`` (bipartite: rows 0..n-1, then first's values, then second's)."""
    a = pd.factorize(pd.Series(first, dtype=object))[0]
    b = pd.factorize(pd.Series(second, dtype=object))[0]
    n, n_a = len(a), a.max() + 1
    rows = np.r_[np.arange(n), np.arange(n)]
    cols = np.r_[n + a, n + n_a + b]
    graph = coo_matrix((np.ones(2 * n), (rows, cols)), shape=(n + n_a + b.max() + 1,) * 2)
    return connected_components(graph, directed=False)[1][:n]


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


def bounded_image_caption_groups(table: pd.DataFrame, max_rows: int | None,
                                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`image_caption_groups` with no group above ``max_rows`` rows. VSR's images and captions
    chain into one component of a third of random/train (2,549 of 7,680 rows), which would put
    half of some relations in one outer fold and leave the bootstrap few clusters. A component
    above the bound is split into Louvain communities of its image–caption graph (rows are
    edges, weighted by multiplicity; seeded), recursively with a higher resolution where a
    community is still too large; the rows whose image and caption land in different
    communities are dropped (on random/train: 97 rows, 1.3%, with max_rows 200), so that no image
    and no caption is on both sides of a split. Returns the groups and the kept-row mask."""
    import networkx as nx

    groups = image_caption_groups(table)
    keep = np.ones(len(table), dtype=bool)
    if max_rows is None:
        return groups, keep
    img = ("i:" + table["image"].astype(str)).to_numpy()
    cap = ("c:" + table["caption"].astype(str)).to_numpy()
    sizes = pd.Series(groups).value_counts()
    out = groups.copy()
    for big in sizes.index[sizes > max_rows]:
        rows = np.flatnonzero(groups == big)
        graph = nx.Graph()
        for a, b in zip(img[rows], cap[rows]):
            w = graph[a][b]["weight"] + 1 if graph.has_edge(a, b) else 1
            graph.add_edge(a, b, weight=w)
        label: dict[str, str] = {}
        for k, nodes in enumerate(_communities(graph, max_rows, seed)):
            for node in nodes:
                label[node] = f"{big}/{k}"
        a_lab = np.array([label[a] for a in img[rows]])
        b_lab = np.array([label[b] for b in cap[rows]])
        keep[rows[a_lab != b_lab]] = False
        out[rows] = a_lab
    return out, keep


def _communities(graph, max_rows: int, seed: int, resolution: float = 1.0) -> list[set]:
    """Louvain communities of ``graph`` whose edge weight (rows) is at most ``max_rows``."""
    import networkx as nx

    if graph.size(weight="weight") <= max_rows or graph.number_of_nodes() <= 2:
        return [set(graph.nodes)]
    parts = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    if len(parts) == 1:  # no split at this resolution: look for finer communities
        return _communities(graph, max_rows, seed, resolution * 2)
    out = []
    for part in parts:
        out += _communities(graph.subgraph(part).copy(), max_rows, seed, resolution)
    return out


def size_summary(groups: np.ndarray) -> dict:
    """Group-size distribution, for reports."""
    sizes = pd.Series(groups).value_counts().to_numpy()
    return {"groups": int(len(sizes)), "rows": int(sizes.sum()), "max": int(sizes.max()),
            "median": float(np.median(sizes)), "p90": float(np.quantile(sizes, 0.9)),
            "singletons": int((sizes == 1).sum())}


def noun_pair_caption_groups(table: pd.DataFrame) -> np.ndarray:
    """Resampling unit of the geometry's VSR-caption statistics: connected components of rows
    linked by a shared unordered (subject, object) noun pair or by a shared caption string, so
    captions about the same two nouns, and repeated captions (with or without parsed nouns),
    always stay together. Images are not linked: on VSR random/train that joins 5,857 of the
    7,680 rows into one component, leaving nothing to resample."""
    n = len(table)
    if n == 0:
        return np.array([], dtype=object)
    pairs, _ = noun_pair_groups(table)
    labels = _linked(pairs, table["caption"].astype(str))
    return np.array([f"npc:{c}" for c in pd.factorize(labels)[0]], dtype=object)


def row_nouns(table: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The two nouns of every row as codes into the sorted noun list: ((n, 2) int array, -1
    where the nouns were not parsed), for resampling *nouns* where noun pairs cross a few nouns
    (the template set: every unordered pair of 10 nouns, so each pair shares a noun with 16
    others and the nouns, not the pairs, are the independent units)."""
    parsed = table["subject"].notna() & table["object"].notna()
    if "parsed" in table:
        parsed &= table["parsed"].fillna(False).astype(bool)
    names = sorted(set(map(str, table.loc[parsed, "subject"])) | set(map(str, table.loc[parsed, "object"])))
    code = {name: k for k, name in enumerate(names)}
    out = np.full((len(table), 2), -1, dtype=np.int64)
    for r, (s, o, ok) in enumerate(zip(table["subject"], table["object"], parsed)):
        if ok:
            out[r] = code[str(s)], code[str(o)]
    return names, out
