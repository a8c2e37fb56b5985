"""CSIM through onnxruntime with a tiny ONNX model, ArcFace alignment, and the cosine statistic.

torch.onnx.export needs the `onnx` package, which is not a dependency here, so the tiny model
(Flatten -> MatMul with a fixed projection) is serialised directly in ONNX's protobuf wire format.
"""

import cv2
import numpy as np
import pytest

from kdtalker.errors import CheckpointError
from kdtalker.eval.csim import ARCFACE_TEMPLATE, align_face, cosine_similarity, csim, five_points, umeyama_similarity
from kdtalker.eval.weights import load_arcface


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims) -> bytes:
    shape = b"".join(_field(1, _field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))  # elem_type 1 = float


def tiny_onnx(path, weight: np.ndarray, size: int = 112) -> None:
    """Write an ONNX model: input 'data' (1,3,size,size) -> Flatten -> MatMul(weight (3 size^2, D)) -> 'embedding'."""
    w = np.ascontiguousarray(weight, np.float32)
    tensor = b"".join(_field(1, d) for d in w.shape) + _field(2, 1) + _field(8, "W") + _field(9, w.tobytes())
    graph = (
        _field(1, _field(1, "data") + _field(2, "flat") + _field(4, "Flatten"))
        + _field(1, _field(1, "flat") + _field(1, "W") + _field(2, "embedding") + _field(4, "MatMul"))
        + _field(2, "tiny_arcface")
        + _field(5, tensor)
        + _field(11, _value_info("data", (1, 3, size, size)))
        + _field(12, _value_info("embedding", (1, w.shape[1])))
    )
    model = _field(1, 8) + _field(8, _field(1, "") + _field(2, 13)) + _field(7, graph)
    with open(path, "wb") as f:
        f.write(model)


@pytest.fixture(scope="module")
def projection():
    return np.random.RandomState(0).randn(3 * 112 * 112, 8).astype(np.float32) / 100


def test_embeddings_and_csim(tmp_path, projection):
    path = tmp_path / "arcface.onnx"
    tiny_onnx(path, projection)
    model = load_arcface(path)
    faces = np.random.RandomState(1).randint(0, 256, (3, 112, 112, 3)).astype(np.uint8)
    emb = model.embed(faces)
    x = ((faces.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2).reshape(3, -1)
    np.testing.assert_allclose(emb, x @ projection, rtol=1e-4, atol=1e-5)
    assert csim(emb[0], emb[[0, 0]]) == pytest.approx(1.0)
    assert csim(emb[0], -emb[[0]]) == pytest.approx(-1.0)
    expected = np.mean([emb[0] @ e / np.linalg.norm(emb[0]) / np.linalg.norm(e) for e in emb[1:]])
    assert csim(emb[0], emb[1:]) == pytest.approx(expected)


def test_cosine_of_orthogonal_and_scaled_vectors():
    np.testing.assert_allclose(cosine_similarity(np.array([1.0, 0.0]), np.array([[0.0, 2.0], [3.0, 0.0]])), [0.0, 1.0])


def test_alignment_to_template():
    # Points already on the template: the warp is the identity. Shifted points: the face moves back.
    rs = np.random.RandomState(2)
    image = cv2.GaussianBlur(rs.randint(0, 256, (112, 112, 3)).astype(np.uint8), (0, 0), 2)
    np.testing.assert_array_equal(align_face(image, ARCFACE_TEMPLATE), image)
    shifted = np.zeros((140, 140, 3), np.uint8)
    shifted[10:122, 20:132] = image
    np.testing.assert_array_equal(align_face(shifted, ARCFACE_TEMPLATE + [20, 10]), image)


def _similarity(angle_deg: float, scale: float, shift) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.hstack([scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), np.array(shift)[:, None]])


def test_umeyama_template_maps_to_itself():
    np.testing.assert_allclose(
        umeyama_similarity(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE), [[1, 0, 0], [0, 1, 0]], rtol=0, atol=1e-12
    )


def test_umeyama_recovers_a_known_similarity():
    src = np.random.RandomState(3).uniform(0, 200, (5, 2))
    m = _similarity(17.0, 1.3, [12.5, -7.25])
    np.testing.assert_allclose(umeyama_similarity(src, src @ m[:, :2].T + m[:, 2]), m, rtol=0, atol=1e-10)


def test_umeyama_is_the_least_squares_similarity():
    # In 2-D a similarity without reflection is [[a, -b], [b, a]] | t: linear least squares in (a, b, tx, ty)
    # gives the optimum independently of the SVD route.
    rs = np.random.RandomState(4)
    src = rs.uniform(0, 100, (5, 2))
    dst = src @ _similarity(-40.0, 0.7, [3.0, 9.0])[:, :2].T + rs.randn(5, 2) * 4
    rows = np.zeros((10, 4))
    rows[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)]
    rows[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(5), np.ones(5)]
    a, b, tx, ty = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)[0]
    np.testing.assert_allclose(umeyama_similarity(src, dst), [[a, -b, tx], [b, a, ty]], rtol=0, atol=1e-10)


def test_umeyama_never_reflects():
    rs = np.random.RandomState(5)
    src = rs.uniform(0, 100, (5, 2))
    mirrored = src * [-1.0, 1.0]  # exactly fitted by a reflection, which must not be returned
    for dst in (mirrored, rs.uniform(0, 100, (5, 2)), src[::-1]):
        assert np.linalg.det(umeyama_similarity(src, dst)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        umeyama_similarity(np.ones((5, 2)), src)


def test_five_points_from_68():
    lm = np.zeros((68, 2))
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30], lm[48], lm[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_array_equal(five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_missing_or_broken_model(tmp_path):
    with pytest.raises(CheckpointError, match="ArcFace"):
        load_arcface(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_arcface(bad)
