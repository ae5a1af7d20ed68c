import pytest
import torch

from gen3d.geometry.hashgrid import PRIMES, HashGrid, HashGridConfig, _LevelPlan, hash_encode, make_hash_encoding

TINY = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=9, base_resolution=4, max_resolution=32)


def _grid(cfg=TINY, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    g = HashGrid(cfg).to(dtype)
    g.table.data.normal_()
    return g


def test_output_shape_and_dims():
    g = HashGrid(HashGridConfig(n_levels=8, n_features_per_level=2, log2_hashmap_size=12))
    y = g(torch.rand(37, 3))
    assert y.shape == (37, 16) and g.n_output_dims == 16
    assert torch.isfinite(y).all()


def test_plan_has_dense_and_hashed_levels():
    plan = _LevelPlan(TINY)
    assert plan.dense[0] and not plan.dense[-1]
    assert plan.total == sum(plan.sizes) and plan.sizes[-1] == 2**TINY.log2_hashmap_size


def test_gradcheck_table_and_inputs():
    cfg = HashGridConfig(n_levels=3, log2_hashmap_size=7, base_resolution=3, max_resolution=12)
    g = _grid(cfg)
    assert g.plan.dense[0] and not g.plan.dense[-1]
    x = (torch.rand(12, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, t: hash_encode(x, t, g.plan), (x, g.table), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("group_entries", [1, 2**12])
def test_fused_matches_reference(group_entries):
    cfg = HashGridConfig(n_levels=6, log2_hashmap_size=11, base_resolution=4, max_resolution=64)
    g = _grid(cfg)
    g.plan = _LevelPlan(cfg, group_entries)
    x = torch.rand(500, 3, dtype=torch.float64, requires_grad=True)
    a, b = hash_encode(x, g.table, g.plan, fused=True), hash_encode(x, g.table, g.plan, fused=False)
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a.sin().sum(), [x, g.table])
    gb = torch.autograd.grad(b.sin().sum(), [x, g.table])
    torch.testing.assert_close(ga[0], gb[0])
    torch.testing.assert_close(ga[1], gb[1])


def test_double_backward_reaches_table():
    """Analytic normals: d/dtable of d(out)/dx matches plain autograd."""
    g = _grid()
    x = torch.rand(50, 3, dtype=torch.float64, requires_grad=True)
    res = []
    for fused in (True, False):
        y = hash_encode(x, g.table, g.plan, fused=fused)
        gx = torch.autograd.grad((y * torch.arange(y.shape[1], dtype=y.dtype)).sum(), x, create_graph=True)[0]
        res.append(torch.autograd.grad(gx.square().sum(), g.table)[0])
    assert res[0].abs().sum() > 0
    torch.testing.assert_close(res[0], res[1])


def _vertex_x(vertex, scale):
    """x in [0,1]^3 that lands exactly on an integer grid vertex (pos = x*s + 0.5)."""
    return ((torch.tensor(vertex, dtype=torch.float64) - 0.5) / scale)[None]


def test_grid_vertices_reproduce_table_entries():
    g = _grid()
    plan, F = g.plan, TINY.n_features_per_level
    for l in range(plan.n_levels):
        s, r, off = plan.scales[l], plan.res[l], plan.offsets[l]
        v = (2, 3, 1)
        y = g(_vertex_x(v, s))[0, l * F : (l + 1) * F]
        if plan.dense[l]:
            row = v[0] + v[1] * r + v[2] * r * r
        else:
            row = (v[0] * PRIMES[0] ^ v[1] * PRIMES[1] ^ v[2] * PRIMES[2]) & (2**TINY.log2_hashmap_size - 1)
        torch.testing.assert_close(y, g.table[:, off + row].detach(), atol=1e-9, rtol=0)


def test_interpolation_is_linear_between_vertices():
    g = _grid()
    s = g.plan.scales[0]
    a, b = g(_vertex_x((1, 1, 1), s)), g(_vertex_x((2, 1, 1), s))
    mid = g(0.5 * (_vertex_x((1, 1, 1), s) + _vertex_x((2, 1, 1), s)))
    torch.testing.assert_close(mid[:, :2], 0.5 * (a[:, :2] + b[:, :2]))


def test_make_hash_encoding_cpu_and_errors():
    assert isinstance(make_hash_encoding(TINY, "torch"), HashGrid)
    if not torch.cuda.is_available():
        assert isinstance(make_hash_encoding(TINY, "auto"), HashGrid)
    with pytest.raises(ValueError):
        make_hash_encoding(TINY, "cuda-magic")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="tinycudann needs CUDA")
def test_agrees_with_tinycudann():
    tcnn = pytest.importorskip("tinycudann")  # noqa: F841
    cfg = HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, max_resolution=128)
    enc = make_hash_encoding(cfg, "tcnn").cuda()
    ours = HashGrid(cfg).cuda()
    params = enc.encoding.params
    if params.numel() != ours.table.numel():
        pytest.skip(f"tcnn sizes its table differently ({params.numel()} vs {ours.table.numel()})")
    with torch.no_grad():
        params.copy_(ours.table.t().reshape(-1).to(params.dtype))
    x = torch.rand(4096, 3, device="cuda") * 0.98 + 0.01
    torch.testing.assert_close(enc(x), ours(x), atol=2e-3, rtol=1e-2)
