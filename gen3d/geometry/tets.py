"""A tetrahedral grid and marching tetrahedra (the surface extraction of DMTet, Shen et al. 2021).

`cube_tets(res)`: the vertices of a regular res^3 grid over [-1, 1]^3 (the extraction grid's points,
gen3d.export.extract.grid_points, in the same [ix, iy, iz] order) and the tetrahedra of each of its
cells split into six along the cell's main diagonal (the Kuhn / Freudenthal split: every cell uses
the same diagonal, so the faces of neighbouring cells' tetrahedra match and the grid is conforming).

`marching_tets(verts, tets, sdf)`: the triangle mesh of the zero level set of `sdf` (< 0 inside),
differentiable w.r.t. the vertex positions and the SDF values (each surface vertex is the linear
zero crossing on a grid edge); faces are wound counter-clockwise seen from outside, and a surface
vertex shared by neighbouring tetrahedra is one vertex, so the mesh of a closed level set is watertight.
"""

from __future__ import annotations

from itertools import permutations

import torch

# the six edges of a tetrahedron, as pairs of its local vertices 0..3
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def cube_tets(res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid vertices [res^3, 3] in [-1, 1] and tetrahedra [6 (res - 1)^3, 4] (long) of a res^3 grid."""
    if res < 2:
        raise ValueError(f"a tetrahedral grid needs at least 2 points per axis, got {res}")
    axis = torch.linspace(-1.0, 1.0, res)
    verts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    i = torch.arange(res - 1)
    base = torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).reshape(-1, 1, 3)  # cell corners [C,1,3]
    unit = torch.eye(3, dtype=torch.long)
    paths = []
    for a, b, _ in permutations(range(3)):  # 000 -> e_a -> e_a + e_b -> 111: one tetrahedron per order
        paths.append(
            torch.stack([torch.zeros(3, dtype=torch.long), unit[a], unit[a] + unit[b], torch.ones(3, dtype=torch.long)])
        )
    corners = base[:, None] + torch.stack(paths)[None]  # [C,6,4,3]
    index = (corners[..., 0] * res + corners[..., 1]) * res + corners[..., 2]
    return verts, index.reshape(-1, 4)


def _case_table() -> torch.Tensor:
    """[16, 2, 3] local edge indices (-1: no triangle) of the surface in each inside/outside case
    (bit k set = vertex k inside). Windings are fixed at run time from the geometry."""
    edge_of = {frozenset(e): k for k, e in enumerate(TET_EDGES)}
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    for case in range(1, 15):
        inside = [v for v in range(4) if case >> v & 1]
        outside = [v for v in range(4) if not case >> v & 1]
        if len(inside) in (1, 3):  # one vertex apart from the other three: one triangle
            lone, rest = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            table[case, 0] = torch.tensor([edge_of[frozenset((lone, r))] for r in rest])
        else:  # two and two: the four crossing edges form a cycle a-c, a-d, b-d, b-c; two triangles
            (a, b), (c, d) = inside, outside
            ring = [edge_of[frozenset(p)] for p in ((a, c), (a, d), (b, d), (b, c))]
            table[case, 0] = torch.tensor([ring[0], ring[1], ring[2]])
            table[case, 1] = torch.tensor([ring[0], ring[2], ring[3]])
    return table


_TABLE = _case_table()


def marching_tets(
    verts: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor, reference: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero level set of sdf [V] (< 0 inside) on the tetrahedra [T,4] of verts [V,3].

    Returns (vertices [E,3], faces [F,3] long); empty tensors when the level set misses every tetrahedron.
    `reference` [V,3] (default verts): the positions the windings are decided on (the undeformed grid,
    where no tetrahedron is inverted)."""
    reference = verts if reference is None else reference
    with torch.no_grad():
        inside = sdf[tets] < 0  # [T,4]
        case = (inside.long() << torch.arange(4, device=tets.device)).sum(-1)
        keep = (case > 0) & (case < 15)
        tets, case = tets[keep], case[keep]
        pairs = tets[:, torch.tensor(TET_EDGES, device=tets.device)]  # [T,6,2]
        pairs = pairs.sort(-1).values
        crossing = inside[keep][:, torch.tensor(TET_EDGES, device=tets.device)]
        crossing = crossing[..., 0] != crossing[..., 1]  # [T,6]
        n = verts.shape[0]
        key = pairs[..., 0] * n + pairs[..., 1]
        unique, inverse = torch.unique(key[crossing], return_inverse=True)
        edge_id = torch.full_like(key, -1)
        edge_id[crossing] = inverse
        local = _TABLE.to(tets.device)[case]  # [T,2,3]
        valid = local[:, :, 0] >= 0
        faces = torch.gather(edge_id[:, None, :].expand(-1, 2, -1), 2, local.clamp(min=0))[valid]  # [F,3]
        owner = torch.arange(len(tets), device=tets.device)[:, None].expand(-1, 2)[valid]
        a, b = unique // n, unique % n
    if unique.numel() == 0:
        return verts.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=verts.device)
    sa, sb = sdf[a], sdf[b]
    t = (sa / (sa - sb)).unsqueeze(-1)  # the zero crossing along a -> b (the signs differ)
    points = verts[a] + t * (verts[b] - verts[a])
    with torch.no_grad():  # wind every face counter-clockwise from outside: its normal along inside -> outside
        ref = reference[a] + t.detach() * (reference[b] - reference[a])
        p0, p1, p2 = ref[faces].unbind(1)
        normal = torch.cross(p1 - p0, p2 - p0, dim=-1)
        tet_pts, tet_in = reference[tets[owner]], inside[keep][owner].to(ref.dtype)[..., None]
        outward = (tet_pts * (1 - tet_in)).sum(1) / (1 - tet_in).sum(1) - (tet_pts * tet_in).sum(1) / tet_in.sum(1)
        flip = (normal * outward).sum(-1) < 0
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return points, faces
