"""scikit-learn's own MLP tests against portable_mlp.sklearn, as a user would switch.

Copies ``sklearn/neural_network/tests/test_mlp.py`` from the installed scikit-learn to a
temporary folder, rewrites its one import of the estimators to portable_mlp's, and runs it
with pytest (scikit-learn's conftest loaded, for its fixtures). The tests known to fail
are marked ``xfail(strict=True)`` with the reason and the exception, below: any other
failure, one of these failing otherwise, or one of them passing, fails the run. Needs
pandas (``test_preserve_feature_names`` skips without it).

    python scripts/sklearn_upstream.py [pytest arguments, e.g. -k early_stopping]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import sklearn
from sklearn.exceptions import NotFittedError

THEIRS = "from sklearn.neural_network import MLPClassifier, MLPRegressor\n"
OURS = "from portable_mlp.sklearn import MLPClassifier, MLPRegressor\n"

# test name -> (why it fails against portable_mlp's estimators, the exception it fails with)
EXPECTED_FAILURES: dict[str, tuple[str, type[BaseException]]] = {
    "test_fit": ("builds the network by assigning coefs_, n_outputs_ and the private "
                 "_coef_grads to an unfitted estimator; ours builds it in the first fit",
                 NotFittedError),
    "test_gradient": ("calls the private _loss_grad_lbfgs and _unpack (our gradients are "
                      "checked in tests/test_gradients.py)", AttributeError),
    "test_learning_rate_warmstart": ("reads the private _optimizer.learning_rate (ours: "
                                     "_trainer.optimizer.lr)", AttributeError),
    "test_adaptive_learning_rate": ("reads the private _optimizer.learning_rate (ours: "
                                    "_trainer.optimizer.lr)", AttributeError),
    "test_early_stopping_stratified": ("message text: scikit-learn names the binarized label "
                                       "('True'), ours the user's label (1)", AssertionError),
}


class ExpectedFailures:
    """A pytest plugin: marks EXPECTED_FAILURES xfail(strict) and checks each was collected."""

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        found = set()
        for item in items:
            name = getattr(item, "originalname", item.name)
            if name in EXPECTED_FAILURES:
                found.add(name)
                reason, raises = EXPECTED_FAILURES[name]
                item.add_marker(pytest.mark.xfail(reason=reason, raises=raises, strict=True))
        deselected = config.getoption("keyword") or config.getoption("markexpr")
        missing = set(EXPECTED_FAILURES) - found
        if missing and not deselected:
            raise pytest.UsageError(f"expected failures not in scikit-learn "
                                    f"{sklearn.__version__}'s test_mlp.py: {sorted(missing)}; "
                                    "update EXPECTED_FAILURES in scripts/sklearn_upstream.py")


def rewritten(source: str) -> str:
    """``source`` with its import of scikit-learn's estimators replaced by ours."""
    if source.count(THEIRS) != 1:
        raise SystemExit(f"scikit-learn {sklearn.__version__}'s test_mlp.py does not import "
                         f"the estimators as {THEIRS.strip()!r} (exactly once); update THEIRS "
                         "in scripts/sklearn_upstream.py")
    return source.replace(THEIRS, OURS)


def main(args: list[str]) -> int:
    upstream = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
    if not upstream.is_file():
        raise SystemExit(f"{upstream} is missing: this scikit-learn was installed without "
                         "its tests")
    with tempfile.TemporaryDirectory(prefix="sklearn_upstream_") as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\n")  # not this repository's settings
        test = folder / "test_mlp_portable.py"
        test.write_text(rewritten(upstream.read_text()))
        print(f"scikit-learn {sklearn.__version__}: {upstream} -> {test.name} "
              f"(imports portable_mlp.sklearn)", flush=True)
        return int(pytest.main([str(test), "-c", str(folder / "pytest.ini"), "--rootdir", tmp,
                                "-p", "sklearn.conftest", "-p", "no:cacheprovider", "-rxXfE",
                                *args], plugins=[ExpectedFailures()]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
