"""Properties of the TextSpan math core (Algorithm 1 of Gandelsman et al., ICLR 2024)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from captum_clipspan.attr.textspan_core import TextSpanResult, textspan


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit_rows(
    rows: int, width: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    bank = torch.randn(rows, width, generator=_generator(seed), dtype=dtype)
    return bank / bank.norm(dim=1, keepdim=True)


def _names(count: int) -> list[str]:
    return [f"text {i}" for i in range(count)]


def _low_rank_head(
    images: int, width: int, rank: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    gen = _generator(seed)
    factors = torch.randn(images, rank, generator=gen, dtype=dtype)
    return factors @ torch.randn(rank, width, generator=gen, dtype=dtype) + 3.0


def _reference_textspan(
    head: torch.Tensor, bank: torch.Tensor, m: int, rank: int, normalize_scoring: bool,
    centered_span: bool = True,
) -> dict[str, torch.Tensor]:
    """Algorithm 1 written out in full E dimensions, one text at a time, in float64."""
    head, bank = head.double(), bank.double()
    mean = head.mean(dim=0)
    centered = head - mean
    residual = centered.clone()
    _, _, vh = torch.linalg.svd(centered if centered_span else head, full_matrices=False)
    top = vh[:rank].T
    texts = bank @ top @ top.T
    indices, basis, scores, explained = [], [], [], []
    for _ in range(m):
        best, best_score = -1, -float("inf")
        for i, text in enumerate(texts):
            if i in indices or text.norm() <= 1e-9:
                continue
            direction = text / text.norm() if normalize_scoring else text
            score = float((residual @ direction).square().sum()) / head.shape[0]
            if score > best_score:
                best, best_score = i, score
        d = texts[best] / texts[best].norm()
        residual = residual - torch.outer(residual @ d, d)
        texts = texts - torch.outer(texts @ d, d)
        indices.append(best)
        basis.append(d)
        scores.append(best_score)
        explained.append(1 - residual.square().sum() / centered.square().sum())
    return {
        "indices": torch.tensor(indices),
        "basis": torch.stack(basis),
        "scores": torch.tensor(scores, dtype=torch.float64),
        "variance_explained": torch.stack(explained),
        "reconstruction": head - residual,
    }


# The options of the paper's Algorithm 1 as written (the centered span, numerical rank, unit
# directions), rather than the authors' code, which the defaults follow.
_CENTERED = dict(rank=None, centered_span=True, normalize_scoring=True)


def _authors_picks(head: torch.Tensor, bank: torch.Tensor, m: int, rank: int) -> list[int]:
    """The authors' loop as they wrote it: the bank projected on the span of the top-``rank``
    right singular vectors of the head outputs *before* centering, then ``m`` times: pick the
    text whose projections have the largest standard deviation over images (unnormalized) and
    remove its direction from the centered outputs and from every text."""
    data = head.double()
    _, _, vh = torch.linalg.svd(data, full_matrices=False)
    span = vh[:rank]
    texts = bank.double() @ span.T @ span
    data = data - data.mean(dim=0, keepdim=True)
    picks = []
    for _ in range(m):
        best = int((data @ texts.T).std(dim=0).argmax())
        picks.append(best)
        chosen = texts[best]
        norm = chosen @ chosen
        data = data - torch.outer(data @ chosen / norm, chosen)
        texts = texts - torch.outer(texts @ chosen / norm, chosen)
    return picks


@pytest.mark.parametrize("seed", range(3))
def test_defaults_pick_what_the_authors_loop_picks_on_a_head_with_a_mean_offset(
    seed: int,
) -> None:
    images, width, num_texts, rank, m = 200, 32, 120, 12, 11  # m < rank: no exhausted ties
    gen = _generator(300 + seed)
    factors = torch.randn(images, 16, generator=gen, dtype=torch.float64)
    factors *= torch.logspace(0.5, -1, 16, dtype=torch.float64)
    head = factors @ torch.randn(16, width, generator=gen, dtype=torch.float64)
    head += 4.0 * torch.randn(width, generator=gen, dtype=torch.float64)  # the mean offset
    bank = _unit_rows(num_texts, width, seed=400 + seed)

    default = textspan(head, bank, _names(num_texts), m=m, rank=rank)
    authors = _authors_picks(head, bank, m, rank)

    assert default.indices.tolist() == authors
    assert default.rank == rank
    # The authors' loop restricted to the centered span is the centered option.
    centered = textspan(head, bank, _names(num_texts), m=rank - 1, rank=rank,
                        centered_span=True)
    offset_free = _authors_picks(head - head.mean(dim=0), bank, rank - 1, rank)
    assert centered.indices.tolist() == offset_free


def test_default_rank_is_the_authors_80_and_keeps_every_direction_of_a_narrow_head() -> None:
    head = torch.randn(300, 100, generator=_generator(26), dtype=torch.float64)
    bank = _unit_rows(90, 100, seed=27)
    assert textspan(head, bank, _names(90), m=2).rank == 80
    narrow = textspan(head[:, :24], bank[:, :24], _names(90), m=2)
    assert narrow.rank == 24
    assert textspan(head[:, :24], bank[:, :24], _names(90), m=2, rank=500).rank == 24


def _orthonormal_coefficients(images: int, stds: list[float], seed: int) -> torch.Tensor:
    """``[images, len(stds)]`` centered, mutually uncorrelated columns with the given stds."""
    raw = torch.randn(images, len(stds), generator=_generator(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(raw - raw.mean(dim=0))
    return q * torch.tensor(stds, dtype=torch.float64) * images**0.5


@pytest.mark.parametrize("normalize_scoring", [True, False])
def test_recovers_planted_text_directions_in_order_of_variance(normalize_scoring: bool) -> None:
    images, width, num_texts = 400, 48, 60
    planted = [41, 7, 23]  # by decreasing variance
    bank = _unit_rows(num_texts, width, seed=1)
    q, _ = torch.linalg.qr(
        torch.randn(width, len(planted), generator=_generator(2), dtype=bank.dtype)
    )
    bank[planted] = q.T  # orthonormal, so the planted texts are exactly the principal directions
    coefficients = _orthonormal_coefficients(images, [4.0, 2.0, 1.0], seed=3)
    # Noise keeps the head full-rank, so the last planted text is not chosen from a 1-D span
    # (where, with normalized scoring, every remaining text would tie).
    noise = 1e-3 * torch.randn(images, width, generator=_generator(4), dtype=bank.dtype)
    head = (coefficients @ bank[planted] + 0.7 + noise).float()

    result = textspan(
        head, bank.float(), _names(num_texts), m=len(planted), normalize_scoring=normalize_scoring
    )

    assert result.indices.tolist() == planted
    assert result.texts == [f"text {i}" for i in planted]
    assert result.rank == width
    assert result.variance_explained[-1].item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(result.scores, torch.tensor([16.0, 4.0, 1.0]), rtol=1e-3, atol=0)


@pytest.mark.parametrize("centered_span", [True, False])
@pytest.mark.parametrize("normalize_scoring", [True, False])
@pytest.mark.parametrize("rank", [None, 2, 5, 12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_slow_full_dimension_reference(
    normalize_scoring: bool, rank: int | None, dtype: torch.dtype, centered_span: bool
) -> None:
    images, width, num_texts = 30, 12, 25
    head = torch.randn(images, width, generator=_generator(5), dtype=dtype) * torch.linspace(
        3, 0.2, width, dtype=dtype
    )
    bank = _unit_rows(num_texts, width, seed=6, dtype=dtype)
    expected_rank = width if rank is None else rank
    # Stop before the span left is 1-D: there all remaining texts share one direction and,
    # with normalized scoring, tie.
    m = min(6, expected_rank - 1)

    result = textspan(
        head, bank, _names(num_texts), m=m, rank=rank, normalize_scoring=normalize_scoring,
        centered_span=centered_span,
    )
    reference = _reference_textspan(head, bank, m, expected_rank, normalize_scoring,
                                    centered_span)

    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    assert result.rank == expected_rank
    assert result.indices.tolist() == reference["indices"].tolist()
    # Each basis row is its text's direction, so its sign is fixed by the text, not arbitrary.
    for name in ("basis", "scores", "variance_explained", "reconstruction"):
        torch.testing.assert_close(getattr(result, name), reference[name].to(dtype), **tol)


def test_rank_none_is_the_numerical_rank_of_the_centered_head_with_centered_span() -> None:
    for dtype in (torch.float32, torch.float64):
        head = _low_rank_head(300, 40, rank=9, seed=7, dtype=dtype)
        head = head + 1e-9 * torch.randn(head.shape, generator=_generator(8), dtype=dtype)
        centered = (head - head.mean(dim=0)).numpy()
        result = textspan(head, _unit_rows(50, 40, seed=9, dtype=dtype), _names(50), m=3,
                          **_CENTERED)
        assert result.rank == np.linalg.matrix_rank(centered)
        # The 1e-9 noise is below float32 resolution but well above float64's.
        assert result.rank == (9 if dtype == torch.float32 else 40)


def test_variance_explained_is_monotone_and_reaches_one_when_m_reaches_rank() -> None:
    head = _low_rank_head(200, 32, rank=6, seed=10, dtype=torch.float32)
    bank = _unit_rows(80, 32, seed=11, dtype=torch.float32)

    result = textspan(head, bank, _names(80), m=6, **_CENTERED)

    assert result.rank == 6
    steps = result.variance_explained
    assert steps.shape == (6,)
    assert bool((steps[1:] >= steps[:-1]).all())
    assert bool((steps > 0).all())
    assert steps[-1].item() == pytest.approx(1.0, abs=1e-6)


def test_stops_with_a_warning_when_no_text_is_left_in_the_span() -> None:
    head = _low_rank_head(100, 16, rank=3, seed=12)
    bank = _unit_rows(40, 16, seed=13)

    with pytest.warns(UserWarning, match=r"only 3 of the m=5 texts"):
        result = textspan(head, bank, _names(40), m=5, **_CENTERED)

    assert len(result.texts) == 3
    assert result.indices.shape == (3,)
    assert result.basis.shape == (3, 16)
    assert result.scores.shape == (3,)
    assert result.variance_explained[-1].item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_every_text_is_exhausted_after_rank_steps_in_float64(seed: int) -> None:
    # Rounding must not leave texts nonzero after the span is used up (a loss of
    # orthogonality between the chosen directions would).
    head = torch.randn(40, 16, generator=_generator(100 + seed), dtype=torch.float64)
    bank = torch.randn(300, 16, generator=_generator(200 + seed), dtype=torch.float64)

    with pytest.warns(UserWarning, match=r"only 16 of the m=17 texts"):
        result = textspan(head, bank, _names(300), m=17)

    gram = result.basis @ result.basis.T
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-13)


def test_reconstruction_is_mean_plus_projection_onto_basis() -> None:
    head = torch.randn(150, 24, generator=_generator(14)) + 5.0
    bank = _unit_rows(60, 24, seed=15, dtype=torch.float32)

    result = textspan(head, bank, _names(60), m=7)

    mean = head.double().mean(dim=0)
    basis = result.basis.double()
    expected = mean + (head.double() - mean) @ basis.T @ basis
    torch.testing.assert_close(result.mean, mean.float())
    torch.testing.assert_close(result.reconstruction, expected.float(), rtol=1e-5, atol=1e-5)
    explained = (
        1 - (head.double() - expected).square().sum() / (head.double() - mean).square().sum()
    )
    assert result.variance_explained[-1].item() == pytest.approx(explained.item(), abs=1e-6)


@pytest.mark.parametrize("normalize_scoring", [True, False])
def test_basis_rows_are_orthonormal(normalize_scoring: bool) -> None:
    head = torch.randn(500, 64, generator=_generator(16))
    bank = _unit_rows(300, 64, seed=17, dtype=torch.float32)

    result = textspan(head, bank, _names(300), m=40, normalize_scoring=normalize_scoring)

    gram = result.basis.double() @ result.basis.double().T
    torch.testing.assert_close(gram, torch.eye(40, dtype=torch.float64), rtol=0, atol=1e-6)


def test_never_chooses_a_text_twice_or_one_orthogonal_to_the_head() -> None:
    width = 20
    head = _low_rank_head(120, width, rank=4, seed=18)
    head[:, -1] = 0.0  # the head never writes along the last axis
    bank = _unit_rows(30, width, seed=19)
    bank[5] = bank[2]  # a duplicate text
    bank[9] = torch.nn.functional.one_hot(torch.tensor(width - 1), width).double() * 10
    for normalize_scoring in (True, False):
        result = textspan(head, bank, _names(30), m=4, rank=None, centered_span=True,
                          normalize_scoring=normalize_scoring)
        chosen = result.indices.tolist()
        assert len(set(chosen)) == 4
        assert 9 not in chosen
        assert not {2, 5} <= set(chosen)


def test_output_dtypes_follow_inputs_and_inputs_are_untouched() -> None:
    head = torch.randn(50, 8, generator=_generator(20), dtype=torch.float64)
    bank = _unit_rows(10, 8, seed=21)
    head_copy, bank_copy = head.clone(), bank.clone()

    result = textspan(head, bank, _names(10), m=3)

    assert torch.equal(head, head_copy) and torch.equal(bank, bank_copy)
    assert result.indices.dtype == torch.long
    float_fields = ("basis", "variance_explained", "reconstruction", "mean", "scores")
    assert {getattr(result, name).dtype for name in float_fields} == {torch.float64}
    halves = textspan(head.half(), bank.bfloat16(), _names(10), m=3)
    assert {getattr(halves, name).dtype for name in float_fields} == {torch.float32}
    # A float64 bank makes the outputs float64 but leaves a float32 head's rank at float32's.
    low_rank = _low_rank_head(100, 8, rank=3, seed=25, dtype=torch.float32)
    mixed = textspan(low_rank, bank, _names(10), m=3, **_CENTERED)
    assert mixed.rank == 3
    assert {getattr(mixed, name).dtype for name in float_fields} == {torch.float64}


_K, _E, _M = 10, 4, 6


def _bad_call(**changes: object) -> dict[str, object]:
    gen = _generator(22)
    kwargs: dict[str, object] = {
        "head_outputs": torch.randn(_K, _E, generator=gen),
        "text_embeddings": torch.randn(_M, _E, generator=gen),
        "texts": _names(_M),
        "m": 2,
    }
    kwargs.update(changes)
    return kwargs


def _with(tensor: torch.Tensor, value: float) -> torch.Tensor:
    tensor = tensor.clone()
    tensor[1, 2] = value
    return tensor


_BAD_INPUTS = {
    "empty bank": (
        _bad_call(text_embeddings=torch.zeros(0, _E), texts=[]),
        ValueError,
        r"empty text bank \(0 rows\)",
    ),
    "texts length": (
        _bad_call(texts=_names(_M - 1)),
        ValueError,
        r"one string per row.*\(6\), got 5",
    ),
    "texts is a string": (_bad_call(texts="abcdef"), TypeError, r"sequence of strings"),
    "m zero": (_bad_call(m=0), ValueError, r"m must be between 1 and the bank size M=6, got 0"),
    "m above bank": (_bad_call(m=_M + 1), ValueError, r"M=6, got 7"),
    "m float": (_bad_call(m=2.0), TypeError, r"m must be an int, got float"),
    "width mismatch": (
        _bad_call(text_embeddings=torch.randn(_M, _E + 1)),
        ValueError,
        r"same width E, got 4 and 5",
    ),
    "head 3-D": (_bad_call(head_outputs=torch.randn(2, _K, _E)), ValueError, r"2-D.*\(2, 10, 4\)"),
    "bank 1-D": (
        _bad_call(text_embeddings=torch.randn(_E)),
        ValueError,
        r"text_embeddings must be 2-D",
    ),
    "one image": (
        _bad_call(head_outputs=torch.randn(1, _E)),
        ValueError,
        r"at least 2 images.*got 1",
    ),
    "nan head": (
        _bad_call(head_outputs=_with(torch.randn(_K, _E), float("nan"))),
        ValueError,
        r"head_outputs contains NaN or inf",
    ),
    "inf bank": (
        _bad_call(text_embeddings=_with(torch.randn(_M, _E), float("inf"))),
        ValueError,
        r"text_embeddings contains NaN or inf",
    ),
    "rank zero": (
        _bad_call(rank=0),
        ValueError,
        r"rank must be None or an int >= 1 \(at most min\(K, E\)=4 .*got 0",
    ),
    "rank float": (_bad_call(rank=2.0), TypeError, r"rank must be an int or None, got float"),
    "integer head": (
        _bad_call(head_outputs=torch.ones(_K, _E, dtype=torch.long)),
        TypeError,
        r"head_outputs must be a floating-point torch.Tensor, got torch.int64",
    ),
    "numpy bank": (
        _bad_call(text_embeddings=np.ones((_M, _E))),
        TypeError,
        r"text_embeddings must be a floating-point torch.Tensor, got ndarray",
    ),
    "constant head": (
        _bad_call(head_outputs=torch.ones(_K, _E)),
        ValueError,
        r"does not vary across images",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_INPUTS), ids=list(_BAD_INPUTS))
def test_bad_input_raises_a_helpful_error(case: str) -> None:
    kwargs, error, message = _BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        textspan(**kwargs)  # type: ignore[arg-type]


def test_result_round_trips_through_frame_and_file(tmp_path: Path) -> None:
    head = torch.randn(80, 16, generator=_generator(23))
    bank = _unit_rows(30, 16, seed=24, dtype=torch.float32)
    texts = [f"a photo of thing {i}" for i in range(30)]
    result = textspan(head, bank, texts, m=5)

    frame = result.to_frame()
    assert list(frame.columns) == ["step", "text", "index", "score", "variance_explained"]
    assert frame["step"].tolist() == [1, 2, 3, 4, 5]
    assert frame["text"].tolist() == result.texts
    assert frame["index"].tolist() == result.indices.tolist()
    np.testing.assert_allclose(frame["score"], result.scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(frame["variance_explained"], result.variance_explained.numpy())

    path = tmp_path / "span.pt"
    result.save(path)
    loaded = TextSpanResult.load(path)
    assert loaded.texts == result.texts and loaded.rank == result.rank
    for name in ("indices", "basis", "variance_explained", "reconstruction", "mean", "scores"):
        assert torch.equal(getattr(loaded, name), getattr(result, name))

    text = str(loaded)
    assert text == repr(loaded)
    assert "rank=16" in text and result.texts[0] in text
    assert f"{result.variance_explained[-1].item():.4f}" in text
    loaded.reconstruction = None  # callers may drop the [K, E] tensor to save memory
    assert repr(loaded) == text


def test_load_rejects_a_file_that_is_not_a_result(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"texts": ["a"]}, path)
    with pytest.raises(ValueError, match=r"not a saved TextSpanResult: it lacks"):
        TextSpanResult.load(path)
