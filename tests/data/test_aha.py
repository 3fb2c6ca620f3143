import numpy as np

from shapetune.data.aha import alpha_from_template, segment_of


def test_alpha_convention():
    # anterior = +axis1, septum = -axis2, inferior = -axis1, lateral = +axis2
    a = alpha_from_template(np.array([1.0, 0.0, -1.0, 0.0]), np.array([0.0, -1.0, 0.0, 1.0]))
    assert np.allclose(a, [0, 90, 180, 270])


def test_segments():
    z = np.array([0.9, 0.9, 0.9, 0.5, 0.5, 0.2, 0.2, 0.02])
    a = np.array([0.0, 60.0, 120.0, 180.0, 300.0, 90.0, 270.0, 123.0])
    assert segment_of(z, a).tolist() == [1, 2, 3, 10, 12, 14, 16, 17]
    # every segment is reachable
    zz, aa = np.meshgrid(np.linspace(0, 1, 50), np.linspace(0, 359, 72))
    assert set(np.unique(segment_of(zz, aa))) == set(range(1, 18))
