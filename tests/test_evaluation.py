"""The zero-shot evaluation written once: predict, correct, ZeroShotClassifier.accuracy."""

from __future__ import annotations

import pytest
import torch

import captum_clipspan as cs
from captum_clipspan.evaluation import correct, predict


def test_predict_and_correct_match_a_loop_written_here():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(6, 2, 3, 5, generator=generator)  # [N, settings..., E]
    classes = torch.nn.functional.normalize(torch.randn(4, 5, generator=generator), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    hits = correct(embeddings, classes, labels)
    assert hits.shape == (6, 2, 3) and hits.dtype == torch.bool
    for n in range(6):
        for i in range(2):
            for j in range(3):
                scores = [float(embeddings[n, i, j] @ classes[c]) for c in range(4)]
                best = max(range(4), key=scores.__getitem__)
                assert predict(embeddings[n, i, j], classes) == best
                assert bool(hits[n, i, j]) == (best == int(labels[n]))
    # the norm of an embedding does not change its class
    assert torch.equal(predict(3 * embeddings, classes), predict(embeddings, classes))


def test_classifier_accuracy_from_embeddings_and_its_checks():
    classes = torch.eye(3, 4)
    classifier = cs.ZeroShotClassifier.from_embeddings(2 * classes, ["a", "b", "c"])
    assert torch.allclose(classifier.class_embeddings.norm(dim=-1), torch.ones(3))
    embeddings = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]])
    assert classifier.accuracy(embeddings, [0, 1, 2, 0]) == pytest.approx(0.75)
    assert classifier.predict(embeddings).tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match=r"0\.\.2 for this classifier"):
        classifier.accuracy(embeddings, [0, 1, 2, 3])
    with pytest.raises(TypeError, match="integer class indices"):
        classifier.accuracy(embeddings, [0.0, 1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="4 class indices"):
        classifier.accuracy(embeddings, [0, 1])
    with pytest.raises(ValueError, match=r"\[3, E\]"):
        cs.ZeroShotClassifier.from_embeddings(classes[:2], ["a", "b", "c"])
